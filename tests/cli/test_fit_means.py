"""`geep fit-means` end to end on a tiny trained model: the means are written beside it, `info` says so, and
`predict`/`calibrate` run the class-means policy; every bad input is one line, exit 2, and leaves the model as it
was."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from geep.cli.main import main
from tests.cli.test_train import FAST, cli, write_three_class_csv
from tests.helpers import save_tiny_encoder


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("fit-means")
    data = write_three_class_csv(root / "train.csv")
    assert main(["train", "--model", str(save_tiny_encoder(root / "enc")), "--train", str(data),
                 "--output", str(root / "model"), *FAST]) == 0
    return root / "model", data


def test_fit_means_then_predict_calibrate_and_info(trained, tmp_path, capsys):
    model, data = trained
    rc, _, err = cli(["predict", "--model", str(model), "--input", str(data), "--output", str(tmp_path / "p.jsonl"),
                      "--policy", "class-means", "--no-progress"], capsys)
    assert rc == 2 and err.count("\n") == 1 and "geep fit-means" in err, err  # not fitted yet
    rc, out, err = cli(["fit-means", "--model", str(model), "--train", str(data)], capsys)
    assert rc == 0, err
    assert "class means of 48 rows" in out and (model / "class_means.safetensors").is_file()
    config = json.loads((model / "config.json").read_text())["geep"]
    assert config["class_means"] == {"file": "class_means.safetensors", "rows": 48, "source": str(data)}
    rc, out, _ = cli(["info", str(model)], capsys)
    assert rc == 0 and "class means:    class_means.safetensors: 48 rows" in out
    for threshold in ("0", "2"):  # never: every row at the last exit; first: every row at the first
        rc, _, err = cli(["predict", "--model", str(model), "--input", str(data), "--output",
                          str(tmp_path / "p.jsonl"), "--overwrite", "--policy", "class-means", "--threshold",
                          threshold, "--no-progress"], capsys)
        assert rc == 0, err
        rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
        assert len(rows) == 48 and {r["exit_layer"] for r in rows} == ({4} if threshold == "0" else {1})
    rc, _, err = cli(["calibrate", "--model", str(model), "--dev", str(data), "--policies", "class-means",
                      "--grid-points", "5", "--max-accuracy-drop", "5"], capsys)
    assert rc == 0, err
    knobs = json.loads((model / "config.json").read_text())["geep"]["default_knobs"]
    assert "class-means" in json.dumps(knobs), knobs


def bad_cases(tmp: Path, data: Path) -> dict:
    (tmp / "unseen.csv").write_text("id,text,label\n0,good,meh\n")
    (tmp / "reg.jsonl").write_text("".join(json.dumps({"text": f"good {i}", "label": i / 2}) + "\n" for i in range(20)))
    return {
        "not a model": (["--model", str(tmp), "--train", str(data)], "no geep model"),
        "unseen label": (["--train", str(tmp / "unseen.csv")], "'meh'"),
        "missing data": (["--train", str(tmp / "nope.csv")], "no such file"),
        "bad batch size": (["--train", str(data), "--batch-size", "0"], "--batch-size must be >= 1"),
    }


@pytest.mark.parametrize("case", ["not a model", "unseen label", "missing data", "bad batch size"])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(case, trained, tmp_path, capsys):
    model, data = trained
    before = (model / "config.json").read_text()
    argv, expected = bad_cases(tmp_path, data)[case]
    if "--model" not in argv:
        argv = ["--model", str(model), *argv]
    had_means = (model / "class_means.safetensors").exists()
    rc, _, err = cli(["fit-means", *argv], capsys)
    assert rc == 2 and err.count("\n") == 1 and expected in err, err
    assert (model / "config.json").read_text() == before
    assert (model / "class_means.safetensors").exists() == had_means


def test_a_regression_model_has_no_classes(tmp_path, capsys):
    data = tmp_path / "reg.jsonl"
    data.write_text("".join(json.dumps({"text": f"good {i}", "label": i / 2}) + "\n" for i in range(20)))
    model = tmp_path / "reg"
    assert main(["train", "--model", str(save_tiny_encoder(tmp_path / "enc")), "--train", str(data),
                 "--output", str(model), *FAST]) == 0
    capsys.readouterr()
    rc, _, err = cli(["fit-means", "--model", str(model), "--train", str(data)], capsys)
    assert rc == 2 and err.count("\n") == 1 and "class means need classes" in err, err
    assert not (model / "class_means.safetensors").exists()


def test_trust_score_sets_then_predict_calibrate_and_info(trained, tmp_path, capsys):
    import shutil

    source, data = trained
    model = tmp_path / "model"
    shutil.copytree(source, model)
    for name in ("class_means.safetensors",):  # start from a model with no statistics
        (model / name).unlink(missing_ok=True)
    config = json.loads((model / "config.json").read_text())
    config["geep"]["class_means"] = None
    (model / "config.json").write_text(json.dumps(config))
    rc, _, err = cli(["predict", "--model", str(model), "--input", str(data), "--output", str(tmp_path / "p.jsonl"),
                      "--policy", "trust-score", "--no-progress"], capsys)
    assert rc == 2 and err.count("\n") == 1 and "--statistics trust-score" in err, err  # not fitted yet
    rc, out, err = cli(["fit-means", "--model", str(model), "--train", str(data), "--statistics",
                        "class-means,trust-score", "--trust-per-class", "5", "--trust-alpha", "0.2"], capsys)
    assert rc == 0, err
    assert "trust-score sets of 15 rows (at most 5 per class, alpha 0.2)" in out and "class means of 48 rows" in out
    geep = json.loads((model / "config.json").read_text())["geep"]
    assert geep["trust_score"] == {"file": "trust_score.safetensors", "rows": 15, "per_class": 5, "alpha": 0.2,
                                   "seed": 0, "source": str(data)}
    assert geep["class_means"]["rows"] == 48
    rc, out, _ = cli(["info", str(model)], capsys)
    assert rc == 0 and "trust score:    trust_score.safetensors: 15 rows" in out and "class means:" in out
    for threshold in ("4", "0"):  # never: every row at the last exit; first: every row at the first
        rc, _, err = cli(["predict", "--model", str(model), "--input", str(data), "--output",
                          str(tmp_path / "p.jsonl"), "--overwrite", "--policy", "trust-score", "--threshold",
                          threshold, "--no-progress"], capsys)
        assert rc == 0, err
        rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
        assert len(rows) == 48 and {r["exit_layer"] for r in rows} == ({4} if threshold == "4" else {1})
    rc, _, err = cli(["calibrate", "--model", str(model), "--dev", str(data), "--policies", "trust-score,class-means",
                      "--grid-points", "5", "--max-accuracy-drop", "5"], capsys)
    assert rc == 0, err
    knobs = json.loads((model / "config.json").read_text())["geep"]["default_knobs"]["fp32"]
    assert "trust-score" in knobs and "class-means" in knobs
    # trust-score alone again: the class means stay
    rc, _, err = cli(["fit-means", "--model", str(model), "--train", str(data), "--statistics", "trust-score"], capsys)
    assert rc == 0, err
    geep = json.loads((model / "config.json").read_text())["geep"]
    assert geep["trust_score"]["per_class"] == 256 and geep["class_means"]["rows"] == 48


@pytest.mark.parametrize("argv, expected", [
    (["--statistics", "nope"], "--statistics unknown 'nope'; choose from: class-means, trust-score"),
    (["--statistics", "trust-score", "--trust-alpha", "1"], "--trust-alpha must be in [0, 1), got 1"),
    (["--statistics", "trust-score", "--trust-per-class", "0"], "--trust-per-class must be a positive integer"),
])
def test_bad_trust_settings_are_one_line_exit_2_and_change_nothing(trained, capsys, argv, expected):
    model, data = trained
    before = (model / "config.json").read_text()
    rc, _, err = cli(["fit-means", "--model", str(model), "--train", str(data), *argv], capsys)
    assert rc == 2 and err.count("\n") == 1 and expected in err, err
    assert (model / "config.json").read_text() == before and not (model / "trust_score.safetensors").exists()
