"""geep build-table and geep calibrate end to end on a tiny saved model."""

import importlib
import json
import os
import tempfile

import pytest
import torch

from geep.cli.main import main
from geep.modeling.model import MultiExitClassifier
from tests.evaluation.test_bounds import reference_drop_bound
from tests.helpers import write_csv
from tests.helpers import random_texts


@pytest.fixture
def saved(make_model, tmp_path):
    model = make_model(exit_layers=[1, 2, 3, 4], pooling="mean")
    with torch.no_grad():
        for head in model.heads.values():  # spread the tiny model's logits so exits differ
            head.classifier.weight.mul_(30.0)
    model.save_pretrained(tmp_path / "m")
    data = write_csv(tmp_path / "dev.csv", ["text", "label"],
                     [(text, f"c{i % 3}") for i, text in enumerate(random_texts(40, seed=3))])
    return tmp_path / "m", data


def config_of(directory):
    return json.loads((directory / "config.json").read_text())["geep"]


def test_build_table_then_predict_and_info(saved, capsys, tmp_path):
    directory, data = saved
    assert main(["build-table", "--model", str(directory), "--data", str(data), "--build-threshold", "0.5",
                 "--ngram", "2", "--combine", "geometric"]) == 0
    table = config_of(directory)["exit_table"]
    assert table["ngram"] == 2 and table["build_threshold"] == 0.5 and table["rows"] == 40
    assert table["combine"] == "geometric"
    assert sum(table["exit_histogram"].values()) == 40
    assert (directory / table["file"]).is_file()
    assert main(["predict", "--model", str(directory), "--input", str(data), "--output", str(tmp_path / "p.jsonl"),
                 "--policy", "geep-verify", "--no-progress"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert len(rows) == 40 and all(1 <= r["exit_layer"] <= 4 for r in rows)
    capsys.readouterr()
    assert main(["info", str(directory)]) == 0
    out = capsys.readouterr().out
    assert "40 rows from" in out and "build threshold S=0.5" in out and "exit histogram: layer 1:" in out


def test_predict_takes_geep_verify_s_continue_threshold(saved, capsys, tmp_path):
    """--threshold is tau, --continue-threshold is t: at tau = 0 every row gets fastbert's exit at t; t out of
    range is one line."""
    directory, data = saved
    assert main(["build-table", "--model", str(directory), "--data", str(data), "--build-threshold", "0.5"]) == 0
    model = MultiExitClassifier.from_pretrained(directory)
    from geep.inference import predict

    seen = set()
    for t in ("0.2", "0.6", "0.9"):
        out = tmp_path / f"p{t}.jsonl"
        assert main(["predict", "--model", str(directory), "--input", str(data), "--output", str(out),
                     "--policy", "geep-verify", "--threshold", "0", "--continue-threshold", t, "--no-progress"]) == 0
        exits = [json.loads(line)["exit_layer"] for line in out.read_text().splitlines()]
        assert exits == predict(model, random_texts(40, seed=3), policy="fastbert", knob=float(t)).exit_layer.tolist()
        seen.add(tuple(exits))
    assert len(seen) == 3
    capsys.readouterr()
    assert main(["predict", "--model", str(directory), "--input", str(data), "--output", str(tmp_path / "x.jsonl"),
                 "--policy", "geep-verify", "--continue-threshold", "1.5"]) == 2
    assert "geep-verify continue threshold must be a number in [0, 1], got 1.5" in capsys.readouterr().err


def test_calibrate_stores_defaults_and_an_unreachable_target_changes_nothing(saved, capsys):
    directory, data = saved
    assert main(["build-table", "--model", str(directory), "--data", str(data)]) == 0
    assert main(["calibrate", "--model", str(directory), "--dev", str(data), "--max-accuracy-drop", "100",
                 "--grid-points", "5"]) == 0
    knobs = config_of(directory)["default_knobs"]["fp32"]
    assert set(knobs) == {"fastbert", "deebert", "confidence", "pabee", "geep", "geep-verify", "elbert", "vote"}
    # With any accuracy allowed, the fastest knob wins: every row at the first exit; predict now uses it.
    from geep.inference import predict
    from geep.modeling.model import MultiExitClassifier

    model = MultiExitClassifier.from_pretrained(directory)
    texts = random_texts(40, seed=3)
    for policy in ("fastbert", "geep"):
        assert predict(model, texts, policy=policy).exit_layer.tolist() == [1] * 40
    # Rebuilding the table drops geep's calibrated knobs: they were chosen for the old table.
    assert main(["build-table", "--model", str(directory), "--data", str(data), "--build-threshold", "0.4"]) == 0
    knobs = config_of(directory)["default_knobs"]["fp32"]
    assert "geep" not in knobs and "geep-verify" not in knobs and "fastbert" in knobs
    before = (directory / "config.json").read_text()
    capsys.readouterr()
    assert main(["calibrate", "--model", str(directory), "--dev", str(data), "--target-speedup", "1000"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unreachable" in err[0] and "best reachable is" in err[0]
    assert (directory / "config.json").read_text() == before


def test_calibrate_stores_geep_verify_s_pair_and_the_fastest_policy_as_the_default(saved, capsys):
    """geep-verify's (tau, t) is searched and stored; the default policy is the fastest of those whose knob passed
    the bound (tests/evaluation/test_bounds.py's reference), and `geep.predict` without a policy runs it."""
    from geep.evaluation import sweep
    from geep.inference import label_ids, predict

    directory, data = saved
    assert main(["build-table", "--model", str(directory), "--data", str(data), "--build-threshold", "0.5"]) == 0
    capsys.readouterr()
    assert main(["calibrate", "--model", str(directory), "--dev", str(data), "--max-accuracy-drop", "3",
                 "--grid-points", "9"]) == 0
    out = capsys.readouterr().out
    config = config_of(directory)
    pair = config["default_knobs"]["fp32"]["geep-verify"]
    assert set(pair) == {"tau", "continue_threshold"} and f"{pair['tau']:.4g}/{pair['continue_threshold']:.4g} |" in out
    model = MultiExitClassifier.from_pretrained(directory)
    texts, labels = random_texts(40, seed=3), [f"c{i % 3}" for i in range(40)]
    result = sweep(model, model.tokenize(texts), label_ids(model, labels), batch_size=32, grid_points=9,
                   policies=list(config["default_knobs"]["fp32"]))
    best = {}  # per policy: the speed-up of its fastest knob the fixed-sequence test passes, worked out here
    for name, points in result.points.items():
        for i, p in sorted(enumerate(points), key=lambda ip: (ip[1].flops_speedup, -ip[1].mean_exit_layer, ip[0])):
            if reference_drop_bound(p.lost, p.gained, 40, 0.9) > 3 + 1e-12:
                break
            if p.flops_speedup > 1:
                best[name] = max(best.get(name, 0.0), p.flops_speedup)
    default = config["default_policy"]["fp32"]
    assert f"default policy at fp32: {default}" in out
    if best:
        assert best[default] == max(best.values())
    else:
        assert default == "full"
    ran = predict(model, texts)
    assert torch.equal(ran.exit_layer, predict(model, texts, policy=default).exit_layer)
    assert predict(model, texts, policy="full").exit_layer.tolist() == [4] * 40
    # The CLI's default stays full: it labels every row with the full model unless a policy is named.
    assert main(["predict", "--model", str(directory), "--input", str(data), "--output",
                 str(directory.parent / "p.jsonl"), "--no-progress"]) == 0
    rows = [json.loads(line) for line in (directory.parent / "p.jsonl").read_text().splitlines()]
    assert {r["exit_layer"] for r in rows} == {4}


def test_calibrate_at_int8_keeps_the_fp32_knobs(saved, capsys):
    directory, data = saved
    assert main(["calibrate", "--model", str(directory), "--dev", str(data), "--policies", "fastbert,pabee",
                 "--max-accuracy-drop", "0", "--grid-points", "5"]) == 0
    fp32 = config_of(directory)["default_knobs"]["fp32"]
    assert main(["calibrate", "--model", str(directory), "--dev", str(data), "--policies", "fastbert,pabee",
                 "--max-accuracy-drop", "100", "--grid-points", "5", "--precision", "int8"]) == 0
    assert "at int8 for accuracy drop" in capsys.readouterr().out
    knobs = config_of(directory)["default_knobs"]
    assert knobs["fp32"] == fp32 and set(knobs["int8"]) == {"fastbert", "pabee"}
    assert knobs["int8"]["fastbert"]["threshold"] >= 0.5  # any accuracy allowed: the fastest knob


@pytest.mark.parametrize("args, message", [
    (["calibrate", "--dev", "{data}", "--policies", "geep"], "needs an exit table"),
    (["calibrate", "--dev", "{data}", "--policies", "full"], "has no knob to calibrate"),
    (["calibrate", "--dev", "{data}", "--policies", "nope"], "unknown policy 'nope'"),
    (["calibrate", "--dev", "{data}", "--target-speedup", "-1"], "must be positive"),
    (["calibrate", "--dev", "missing.csv"], "no such file"),
    (["calibrate", "--dev", "{data}", "--precision", "int4"], "unknown precision 'int4'"),
    (["calibrate", "--dev", "{data}", "--precision", "fp16"], "fp16 runs on cuda, not cpu"),
    (["build-table", "--build-threshold", "2"], "--build-threshold must lie in [0, 1]"),
    (["build-table", "--data", "{data}", "--smoothing", "inf"], "--smoothing must be a finite number"),
    (["build-table"], "has no table_data.jsonl"),
    (["build-table", "--data", "{data}", "--text-column", "nope"], "nope"),
    (["calibrate", "--dev", "{data}", "--text-pair-column", "text"], "trained on single texts"),
    (["build-table", "--data", "{data}", "--text-pair-column", "text"], "trained on single texts"),
    (["build-table", "--data", "{data}", "--dev", "{data}", "--text-pair-column", "text"], "trained on single texts"),
])
def test_bad_input_is_one_line(saved, capsys, args, message):
    directory, data = saved
    args = [a.replace("{data}", str(data)) for a in args]
    if "--target-speedup" not in args and args[0] == "calibrate":
        args += ["--max-accuracy-drop", "1"]
    assert main(args[:1] + ["--model", str(directory)] + args[1:]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


@pytest.mark.parametrize("flag", ["--max-accuracy-drop", "--target-speedup"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_a_non_finite_target_is_refused_at_parse_time(saved, monkeypatch, capsys, flag, value):
    directory, data = saved
    monkeypatch.setattr(MultiExitClassifier, "from_pretrained", lambda *a, **k: pytest.fail("the model loaded"))
    with pytest.raises(SystemExit) as e:
        main(["calibrate", "--model", str(directory), "--dev", str(data), f"{flag}={value}"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"argument {flag}: must be a finite number, got '{value}'" in err[0]


def test_build_threshold_defaults_to_fastbert_calibrated_on_dev(saved, capsys):
    """Without --build-threshold, S is the fastbert knob `geep calibrate --max-accuracy-drop 0` would choose."""
    directory, data = saved
    assert main(["calibrate", "--model", str(directory), "--dev", str(data), "--policies", "fastbert",
                 "--max-accuracy-drop", "0"]) == 0
    expected = config_of(directory)["default_knobs"]["fp32"]["fastbert"]["threshold"]
    assert main(["build-table", "--model", str(directory), "--data", str(data), "--dev", str(data)]) == 0
    assert config_of(directory)["exit_table"]["build_threshold"] == pytest.approx(expected)
    assert main(["build-table", "--model", str(directory), "--data", str(data)]) == 0  # no dev: the fixed default
    assert config_of(directory)["exit_table"]["build_threshold"] == 0.2


def snapshot(directory):
    """Each file's bytes, inode and modification time: a file rewritten with the same bytes still shows."""
    return {p.name: (p.read_bytes(), p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(directory.iterdir())}


def test_calibrate_rewrites_only_config_json(saved):
    directory, data = saved
    assert main(["build-table", "--model", str(directory), "--data", str(data)]) == 0
    before = snapshot(directory)
    assert "exit_table.safetensors" in before
    assert main(["calibrate", "--model", str(directory), "--dev", str(data), "--max-accuracy-drop", "1",
                 "--grid-points", "5"]) == 0
    after = snapshot(directory)
    assert set(after) == set(before)
    assert [name for name in before if after[name] != before[name]] == ["config.json"]


@pytest.fixture
def read_only(monkeypatch):
    """Makes a directory refuse new files, as a read-only mount or a directory of another user does (tests may
    run as root, whom chmod does not stop): creating a temporary file there raises PermissionError."""
    real = tempfile.mkstemp

    def mkstemp(*args, **kwargs):
        if os.path.realpath(kwargs.get("dir") or "") in blocked:
            raise PermissionError(13, "Permission denied")
        return real(*args, **kwargs)

    blocked = set()
    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    return lambda directory: blocked.add(os.path.realpath(directory))


@pytest.mark.parametrize("command", ["calibrate", "build-table"])
def test_an_unwritable_model_fails_before_the_pass_over_the_data(saved, read_only, monkeypatch, capsys, command):
    directory, data = saved
    passes = []
    for module, name in (("calibrate", "sweep"), ("build_table", "run_policy")):  # the package names shadow them
        monkeypatch.setattr(importlib.import_module(f"geep.evaluation.{module}"), name,
                            lambda *a, name=name, **k: passes.append(name))
    before = snapshot(directory)
    read_only(directory)
    args = (["--dev", str(data), "--max-accuracy-drop", "1"] if command == "calibrate" else
            ["--data", str(data), "--build-threshold", "0.3"])
    assert main([command, "--model", str(directory), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"cannot write into --model {directory}" in err
    assert passes == []  # nothing ran
    assert snapshot(directory) == before
