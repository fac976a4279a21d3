"""`geep train --task` end to end on a tiny encoder for regression (sentence pairs) and multi-label, the task
auto-detected from the data, and every bad input of the issue: a one-line error, exit 2, nothing written."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from geep.cli.main import main
from tests.helpers import FILLER, save_tiny_encoder

FAST = ["--max-length", "16", "--epochs", "1", "--batch-size", "16", "--no-progress", "--table-fraction", "0.2"]


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory) -> Path:
    return save_tiny_encoder(tmp_path_factory.mktemp("tiny-enc"))


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def regression_rows(n: int = 60, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        k = rng.randint(0, 3)
        rows.append({"text": " ".join([rng.choice(FILLER) for _ in range(3)] + ["good"] * k), "pair": "a film",
                     "label": k + rng.random() / 2})
    return rows


def multi_label_rows(n: int = 60, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        labels = [name for name in ("sport", "vote", "stock") if rng.random() < 0.4]
        rows.append({"text": " ".join([rng.choice(FILLER) for _ in range(3)] + labels), "label": labels})
    return rows


def cli(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        rc = main(argv)
    except SystemExit as e:
        rc = e.code
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


@pytest.fixture(scope="module")
def trained(encoder_dir, tmp_path_factory):
    """A regression model on sentence pairs (task auto-detected, with the learned exit) and a multi-label one."""
    root = tmp_path_factory.mktemp("tasks")
    reg_data = write_jsonl(root / "reg.jsonl", regression_rows())
    ml_data = write_jsonl(root / "ml.jsonl", multi_label_rows())
    for name, data, extra in (("reg", reg_data, ["--text-pair-column", "pair", "--exit-module", "lte"]),
                              ("ml", ml_data, ["--objective", "pabee"])):
        assert main(["train", "--model", str(encoder_dir), "--train", str(data), "--output", str(root / name),
                     *FAST, *extra]) == 0
    return root


def test_the_task_is_detected_and_said_in_the_log_info_and_card(trained, capsys):
    for name, task, why, metric in (("reg", "regression", "holds floats", "pearson"),
                                    ("ml", "multi-label", "holds lists", "micro-f1")):
        config = json.loads((trained / name / "config.json").read_text())["geep"]
        assert config["task"] == task
        args = json.loads((trained / name / "training_args.json").read_text())
        assert args["task"]["name"] == task and why in args["task"]["why"]
        card = (trained / name / "README.md").read_text()
        assert f"**Task**: `{task}` (auto: label column 'label' {why})" in card and f"dev {metric}" in card
        rc, out, _ = cli(["info", str(trained / name)], capsys)
        assert rc == 0 and f"task:           {task} (auto" in out and f"per-exit dev {metric}:" in out
    config = json.loads((trained / "reg" / "config.json").read_text())["geep"]
    scores = [r["label"] for r in regression_rows()]
    assert config["exit_module"] == "lte" and config["text_pair_column"] == "pair"
    assert config["label_names"] == [] and 0 < config["target_std"] and min(scores) < config["target_mean"] < max(scores)
    assert json.loads((trained / "ml" / "config.json").read_text())["geep"]["label_names"] == ["sport", "stock", "vote"]


def test_predict_calibrate_and_bench_each_task(trained, tmp_path, capsys):
    data = write_jsonl(tmp_path / "ml.jsonl", multi_label_rows(30, seed=3))
    rc, _, err = cli(["predict", "--model", str(trained / "ml"), "--input", str(data), "--output",
                      str(tmp_path / "p.csv"), "--policy", "margin", "--threshold", "0.1", "--no-progress"], capsys)
    assert rc == 0, err
    header, first = (tmp_path / "p.csv").read_text().splitlines()[:2]
    assert header == "prediction,probabilities,exit_layer" and first.startswith("[")
    rc, out, err = cli(["calibrate", "--model", str(trained / "ml"), "--dev", str(data), "--max-accuracy-drop", "5",
                        "--grid-points", "5"], capsys)
    assert rc == 0, err
    assert "micro-f1 drop <= 5 points by the dev point estimate (no bound)" in out and "| margin " in out
    assert "| fastbert" not in out and "no bound: micro-f1 is not a mean of right rows" in out
    reg = write_jsonl(tmp_path / "reg.jsonl", regression_rows(30, seed=3))
    rc, out, err = cli(["bench", "--model", str(trained / "reg"), "--data", str(reg), "--output", str(tmp_path / "b"),
                        "--batch-sizes", "8", "--grid-points", "3", "--timed-points", "1", "--no-progress"], capsys)
    assert rc == 0, err
    result = json.loads((tmp_path / "b" / "bench.json").read_text())
    assert {r["policy"] for r in result["records"]} == {"full", "pabee", "lte", "geep", "geep-verify"}
    assert all(r["metric"] == "pearson" and r["accuracy"] is None for r in result["records"])
    assert "full pearson" in (tmp_path / "b" / "report.md").read_text()


@pytest.mark.parametrize("rows, extra, message", [
    ([{"text": "a", "label": "3.5"}, {"text": "b", "label": "abc"}], ["--task", "regression"],
     "data row 2's label 'abc' is not a number"),
    ([{"text": "a", "label": "1.5"}, {"text": "b", "label": "nan"}], ["--task", "regression"],
     "data row 2's label is 'nan'; a regression label must be finite"),
    ([{"text": "a", "label": "1.5"}, {"text": "b", "label": "-inf"}], ["--task", "regression"], "must be finite"),
    ([{"text": "a", "label": ["x"]}, {"text": "b", "label": None}], [], "data row 2 has no label"),
    ([{"text": "a", "label": 1.0}, {"text": "b", "label": 1.0}], [], "every regression label of the training data"),
    ([{"text": "a", "label": "x"}], ["--task", "classification", "--label-separator", ";"],
     "--label-separator applies to multi-label data only"),
])
def test_bad_training_labels_are_one_line_and_write_nothing(encoder_dir, tmp_path, capsys, rows, extra, message):
    if all(isinstance(r["label"], str) for r in rows):  # a CSV: every column read as text
        data = tmp_path / "bad.csv"
        data.write_text("text,label\n" + "".join(f"{r['text']},{r['label']}\n" for r in rows * 10))
    else:
        data = write_jsonl(tmp_path / "bad.jsonl", rows * 10)
    out = tmp_path / "model"
    rc, stdout, err = cli(["train", "--model", str(encoder_dir), "--train", str(data), "--output", str(out), *FAST,
                           *extra], capsys)
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_bad_runs_for_a_task_are_one_line_and_write_nothing(trained, tmp_path, capsys):
    data = write_jsonl(tmp_path / "reg.jsonl", regression_rows(10, seed=5))
    out = tmp_path / "p.jsonl"
    for model, policy, message in (
            ("reg", "fastbert", "the fastbert policy reads a softmax over classes; a regression model can use: "),
            ("ml", "lte", "the lte policy reads a learned exit's certainty, and this model has no exit module")):
        rc, _, err = cli(["predict", "--model", str(trained / model), "--input", str(data), "--output", str(out),
                          "--policy", policy], capsys)
        assert rc == 2 and message in err and len(err.strip().splitlines()) == 1, err
        assert not out.exists()
    unknown = write_jsonl(tmp_path / "ml.jsonl", [{"text": "a", "label": ["sport", "cooking"]}] * 5)
    before = (trained / "ml" / "config.json").read_text()
    rc, _, err = cli(["calibrate", "--model", str(trained / "ml"), "--dev", str(unknown), "--max-accuracy-drop", "1"],
                     capsys)
    assert rc == 2 and "label(s) never seen in training: 'cooking'" in err and len(err.strip().splitlines()) == 1
    assert (trained / "ml" / "config.json").read_text() == before
    empty = write_jsonl(tmp_path / "ml2.jsonl", [{"text": "a", "label": None}] * 5)
    rc, _, err = cli(["bench", "--model", str(trained / "ml"), "--data", str(empty), "--output", str(tmp_path / "b")],
                     capsys)
    assert rc == 2 and "has no label" in err and not (tmp_path / "b").exists()


@pytest.mark.timeout(180)
def test_predict_ray_writes_each_task_s_rows_as_single_process_predict(trained, tmp_path, capsys):
    pytest.importorskip("ray")
    from geep.integrations.ray_data import read_output

    rows = [{"id": f"r{i:02d}", **row} for i, row in enumerate(multi_label_rows(16, seed=7))]
    data = write_jsonl(tmp_path / "in.jsonl", rows)
    single = tmp_path / "single.jsonl"
    assert main(["predict", "--model", str(trained / "ml"), "--input", str(data), "--output", str(single),
                 "--policy", "margin", "--threshold", "0.1", "--no-progress"]) == 0
    expected = {r["id"]: r for r in map(json.loads, single.read_text().splitlines())}
    rc, _, err = cli(["predict", "--ray", "--model", str(trained / "ml"), "--input", str(data), "--output",
                      str(tmp_path / "ray"), "--policy", "margin", "--threshold", "0.1", "--output-format", "parquet",
                      "--threads", "1"], capsys)
    assert rc == 0, err
    frame, manifest = read_output(tmp_path / "ray")
    assert manifest["rows_out"] == 16 and list(frame.columns) == ["id", "prediction", "probabilities", "exit_layer"]
    for row in frame.to_dict("records"):
        want = expected[row["id"]]
        assert list(row["prediction"]) == want["prediction"] and row["exit_layer"] == want["exit_layer"]
