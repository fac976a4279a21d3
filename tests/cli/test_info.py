"""`geep info` and `geep predict` on a damaged model directory: one line, exit 2, never a traceback."""

import json

import pytest

from geep.cli.main import main


@pytest.fixture
def model_dir(make_model, tmp_path):
    make_model(exit_layers=[2]).save_pretrained(tmp_path / "m")
    (tmp_path / "in.csv").write_text("text\nhello\n")
    return tmp_path / "m"


DAMAGE = {
    "geep section a string": lambda cfg: cfg.update(geep="oops"),
    "geep section a list": lambda cfg: cfg.update(geep=[1]),
    "exit table a string": lambda cfg: cfg["geep"].update(exit_table="oops"),
    "dev accuracy a string": lambda cfg: cfg["geep"].update(dev_accuracy="x"),
    "exit layers a string": lambda cfg: cfg["geep"].update(exit_layers="x"),
    "num layers missing": lambda cfg: cfg["geep"].pop("num_layers"),
    "max length a string": lambda cfg: cfg["geep"].update(max_length="128"),
}


@pytest.mark.parametrize("command", ["info", "predict"])
@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_config_is_one_line(model_dir, tmp_path, capsys, command, damage):
    path = model_dir / "config.json"
    config = json.loads(path.read_text())
    DAMAGE[damage](config)
    path.write_text(json.dumps(config))
    argv = (["info", str(model_dir)] if command == "info" else
            ["predict", "--model", str(model_dir), "--input", str(tmp_path / "in.csv"), "--output",
             str(tmp_path / "out.jsonl"), "--no-progress"])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "config.json" in err
    assert not (tmp_path / "out.jsonl").exists()


def test_a_damaged_backbone_config_is_one_line(model_dir, tmp_path, capsys):
    path = model_dir / "config.json"
    config = json.loads(path.read_text())
    config["hidden_size"] = "x"
    path.write_text(json.dumps(config))
    assert main(["predict", "--model", str(model_dir), "--input", str(tmp_path / "in.csv"), "--output",
                 str(tmp_path / "out.jsonl"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is damaged" in err and "hidden_size" in err


def test_a_damaged_training_args_file_is_ignored(model_dir, capsys):
    for damaged in ("[1, 2]", "{not json", '"text"'):
        (model_dir / "training_args.json").write_text(damaged)
        assert main(["info", str(model_dir)]) == 0
        assert "per-exit dev accuracy" in capsys.readouterr().out


def test_info_on_a_0_1_0_directory_shows_its_knobs_without_a_bound(capsys):
    """geep 0.1.0 stored one number per policy and no evidence: info shows the values alone and no default policy."""
    from pathlib import Path

    golden = Path(__file__).resolve().parents[1] / "golden" / "attention-mean-all-exits"
    assert main(["info", str(golden)]) == 0
    out = capsys.readouterr().out
    knobs = json.loads((golden / "config.json").read_text())["geep"]["default_knobs"]
    assert f"fp32 fastbert threshold={knobs['fastbert']:g}\n" in out
    assert "% confidence" not in out and "default policy: none (run `geep calibrate`)" in out
