"""`geep cascade`, `geep train --num-layers` and every surface that takes a cascade directory, from the command line:
end to end on tiny models, and every bad input one line, exit 2, nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from geep.cli.main import main
from geep.inference import run_policy
from geep.modeling.cascade import Cascade, load_model
from tests.helpers import random_texts, save_tiny_encoder, synthetic, tiny_member, write_csv

TEXTS = random_texts(40, seed=9)


def cli(argv, capsys):
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:
        rc = e.code
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli-cascade")
    tiny_member(d / "small", 1, [1], seed=0, texts=TEXTS, truncated_from=3)
    tiny_member(d / "big", 3, [1, 2, 3], seed=1, texts=TEXTS)
    tiny_member(d / "mid", 2, [2], seed=2, texts=TEXTS, truncated_from=3)
    tiny_member(d / "other-labels", 1, [1], seed=3, texts=TEXTS, labels=("x", "y"))
    labels = [["c0", "c1", "c2"][i % 3] for i in range(len(TEXTS))]
    write_csv(d / "data.csv", ["id", "text", "label"], [(i, t, y) for i, (t, y) in enumerate(zip(TEXTS, labels))])
    return d


def test_cascade_predict_calibrate_info(members, tmp_path, capsys):
    out = tmp_path / "c"
    rc, stdout, err = cli(["cascade", "--model", members / "small", "--model", members / "big", "--output", out],
                          capsys)
    assert rc == 0, err
    assert (out / "cascade.json").is_file() and (out / "README.md").is_file() and "1 + 3 layers" in stdout
    rc, _, err = cli(["calibrate", "--model", out, "--dev", members / "data.csv", "--max-accuracy-drop", "100",
                      "--policies", "cascade,cascade-fastbert", "--grid-points", "5"], capsys)
    assert rc == 0, err
    stored = json.loads((out / "cascade.json").read_text())
    assert set(stored["default_knobs"]["fp32"]) == {"cascade", "cascade-fastbert"} and len(
        stored["temperatures"]["fp32"]) == 1
    rc, stdout, err = cli(["info", out], capsys)
    assert rc == 0 and "member 2:" in stdout and "cascade layers 2..4" in stdout and "temperatures:" in stdout
    for suffix in (".jsonl", ".csv"):
        rc, _, err = cli(["predict", "--model", out, "--input", members / "data.csv", "--output",
                          tmp_path / f"p{suffix}", "--policy", "cascade", "--cascade-threshold", "0.5",
                          "--no-progress"], capsys)
        assert rc == 0, err
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    cascade = load_model(out)
    run = run_policy(cascade, cascade.tokenize(TEXTS), "cascade", 0.5)
    assert [r["exit_layer"] for r in rows] == run.exit_layer.tolist()
    assert [r["exit_member"] for r in rows] == cascade.exit_members(run.exit_layer).tolist()
    assert (tmp_path / "p.csv").read_text().splitlines()[0].endswith("exit_layer,exit_member")


@pytest.mark.parametrize("case", ["labels", "missing", "encoder", "one"])
def test_bad_cascades_are_one_line_and_write_nothing(members, tmp_path, capsys, case):
    second = {"labels": members / "other-labels", "missing": members / "nope", "encoder": tmp_path / "enc",
              "one": None}[case]
    if case == "encoder":
        save_tiny_encoder(second)
        capsys.readouterr()
    argv = ["cascade", "--model", members / "small"] + ([] if second is None else ["--model", second])
    rc, _, err = cli(argv + ["--output", tmp_path / "c"], capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and not (tmp_path / "c").exists(), err


def test_cascade_thresholds_on_a_model_are_one_line(members, tmp_path, capsys):
    rc, _, err = cli(["predict", "--model", members / "big", "--input", members / "data.csv", "--output",
                      tmp_path / "p.jsonl", "--cascade-threshold", "0.5"], capsys)
    assert rc == 2 and "apply to a cascade" in err and not (tmp_path / "p.jsonl").exists()


@pytest.mark.parametrize("k", ["0", "5"])
def test_num_layers_outside_the_encoder_is_one_line_and_writes_nothing(tmp_path, capsys, k):
    texts, labels = synthetic(30)
    data = write_csv(tmp_path / "t.csv", ["text", "label"], zip(texts, labels))
    rc, _, err = cli(["train", "--model", save_tiny_encoder(tmp_path / "enc"), "--train", data, "--output",
                      tmp_path / "m", "--num-layers", k], capsys)
    assert rc == 2 and "--num-layers must be in 1..4" in err and not (tmp_path / "m").exists()


def test_num_layers_trains_a_complete_model_with_one_exit(tmp_path, capsys):
    texts, labels = synthetic(40)
    data = write_csv(tmp_path / "t.csv", ["text", "label"], zip(texts, labels))
    rc, _, err = cli(["train", "--model", save_tiny_encoder(tmp_path / "enc"), "--train", data, "--output",
                      tmp_path / "m", "--num-layers", "2", "--objective", "fine-tune", "--max-length", "16",
                      "--epochs", "1", "--no-progress"], capsys)
    assert rc == 0, err
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["num_hidden_layers"] == 2 and config["geep"]["exit_layers"] == [2]
    assert config["geep"]["truncated_from"] == 4 and not (tmp_path / "m" / "table_data.jsonl").exists()
    rc, stdout, _ = cli(["info", tmp_path / "m"], capsys)
    assert "the first 2 of the encoder's 4 layers" in stdout


def test_bench_puts_static_models_and_a_cascade_on_the_references_axes(members, tmp_path, capsys):
    """Speed-ups over the reference (big)'s full: a static model's FLOPs ratio is big's full FLOPs over its own,
    each run here by run_policy; the report draws the static line and the 2x/3x/4x table."""
    Cascade.from_members([members / "small", members / "big"]).save_pretrained(tmp_path / "c")
    rc, _, err = cli(["bench", "--model", members / "big", "--model", members / "small", "--model", members / "mid",
                      "--model", tmp_path / "c", "--data", members / "data.csv", "--output", tmp_path / "b",
                      "--batch-sizes", "8", "--grid-points", "5", "--timed-points", "2", "--no-progress"], capsys)
    assert rc == 0, err
    result = json.loads((tmp_path / "b" / "bench.json").read_text())
    assert result["header"]["reference"] == "big"
    big, small = load_model(members / "big"), load_model(members / "small")
    encoded = big.tokenize(TEXTS)
    ratio = run_policy(big, encoded, "full", batch_size=8).flops.total / run_policy(
        small, encoded, "full", batch_size=8).flops.total
    full_small = next(r for r in result["records"] if r["model"] == "small" and r["policy"] == "full")
    assert full_small["flops_speedup_ref"] == pytest.approx(ratio) and full_small["wall_speedup_ref"] > 0
    assert {r["policy"] for r in result["records"] if r["model"] == "small"} == {"full"}
    assert {"cascade", "cascade-fastbert", "full", "oracle"} <= {r["policy"] for r in result["records"]
                                                                 if r["model"] == "c"}
    assert result["header"]["models"]["c"]["kind"] == "cascade"
    assert set(result["header"]["models"]["big"]["difficulty_inversion"]["fp32"]) == {"fastbert", "deebert",
                                                                                      "confidence"}
    report = (tmp_path / "b" / "report.md").read_text()
    assert "## Against `big`" in report and "| static baseline |" in report and "Difficulty Inversion" in report
