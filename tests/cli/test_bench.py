import json

import pytest

from geep.cli.main import main
from tests.helpers import write_csv
from tests.helpers import random_texts

TEXTS = random_texts(24, seed=12)
LABELS = ["c0", "c1", "c2"] * 8


@pytest.fixture
def model_dir(make_model, tmp_path):
    model = make_model(exit_layers=[2, 4])
    model.config.text_column = "body"
    model.save_pretrained(tmp_path / "geep-model")
    return tmp_path / "geep-model"


@pytest.fixture
def data(tmp_path):
    return write_csv(tmp_path / "in.csv", ["body", "label"], zip(TEXTS, LABELS))


def bench_cli(*argv):
    return main(["bench", "--no-progress", *map(str, argv)])


def test_bench_end_to_end(model_dir, data, tmp_path, capsys):
    out = tmp_path / "out"
    assert bench_cli("--model", model_dir, "--data", data, "--output", out, "--repeats", 5, "--timed-points", 2,
                     "--grid-points", 5, "--batch-sizes", "1,8") == 0
    assert sorted(p.name for p in out.iterdir()) == ["bench.json", "curves.png", "report.md"]
    result = json.loads((out / "bench.json").read_text())
    h = result["header"]
    assert h["n"] == 24 and h["data"] == str(data) and len(h["data_sha256"]) == 64
    assert h["batch_sizes"] == [1, 8] and h["repeats"] == 5 and h["timed_points"] == 2 and h["grid_points"] == 5
    assert set(h["versions"]) == {"python", "torch", "transformers", "geep"} and "git_commit" in h
    assert h["device"].startswith("cpu (")
    model = h["models"]["geep-model"]
    assert model["objective"] == "geep" and 0 <= model["full_accuracy"] <= 1 and model["tokenize_seconds"] > 0
    assert model["skipped_policies"] == ["geep", "geep-verify"]  # no exit table
    policies = {r["policy"] for r in result["records"]}
    assert policies == {"full", "fastbert", "deebert", "confidence", "pabee", "oracle", "elbert", "vote"}
    assert model["policies_not_for_model"] == ["lte", "margin", "sentee"]  # no exit module; not multi-label
    for r in result["records"]:
        assert r["model"] == "geep-model" and r["batch_size"] in (1, 8)
        if r["timed"]:
            assert r["wall_speedup"] > 0 and r["samples_per_s"] > 0 and r["wall_seconds"] > 0
        else:
            assert r["wall_speedup"] is None and r["samples_per_s"] is None
    fastbert = [r for r in result["records"] if r["policy"] == "fastbert" and r["batch_size"] == 8]
    assert [r["knob"] for r in fastbert] == [0.0, 0.25, 0.5, 0.75, 1.0]
    # Both ends are picked; t = 0 (no row exits early: full's work) is not timed again.
    assert [r["timed"] for r in fastbert] == [False, False, False, False, True]
    assert "## `geep-model` (geep), batch size 8" in (out / "report.md").read_text()
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    printed = capsys.readouterr().out
    assert "FLOPs frontier within 1 point" in printed and str(out / "bench.json") in printed


def test_two_models_are_labelled_by_objective(make_model, data, tmp_path):
    dirs = []
    for seed, objective in ((0, "geep"), (1, "fastbert")):
        model = make_model(exit_layers=[2, 4], seed=seed, objective=objective)
        model.config.text_column = "body"
        model.save_pretrained(tmp_path / objective / "model")  # same dir name: named by path
        dirs += ["--model", tmp_path / objective / "model"]
    out = tmp_path / "out"
    assert bench_cli(*dirs, "--data", data, "--output", out, "--policies", "fastbert", "--batch-sizes", 4,
                     "--max-samples", 12, "--repeats", 5, "--timed-points", 2, "--grid-points", 3) == 0
    result = json.loads((out / "bench.json").read_text())
    assert result["header"]["n"] == 12 and result["header"]["max_samples"] == 12
    names = {str(tmp_path / o / "model"): o for o in ("geep", "fastbert")}
    assert {n: m["objective"] for n, m in result["header"]["models"].items()} == names
    assert {(r["model"], r["objective"]) for r in result["records"]} == set(names.items())


BAD = [
    (["--model", "{tmp}/nomodel"], "no geep model at"),
    (["--data", "{tmp}/missing.csv"], "no such file"),
    (["--data", "{tmp}/nolabels.csv"], "has no column 'label'"),
    (["--data", "{tmp}/badlabels.csv"], "'zz'"),
    (["--label-column", "nope"], "has no column 'nope'"),
    (["--policies", "fastbert,nope"], "unknown policy 'nope'"),
    (["--batch-sizes", "0"], "--batch-sizes must be positive"),
    (["--batch-sizes", "1,x"], "--batch-sizes must be comma-separated positive integers"),
    (["--repeats", "4"], "--repeats must be at least 5"),
    (["--timed-points", "0"], "--timed-points must be at least 1"),
    (["--accuracy-budget", "-1"], "--accuracy-budget must be in [0, 100] points"),
    (["--grid-points", "1"], "--grid-points must be in 2..1001, got 1"),
    (["--max-samples", "0"], "--max-samples must be at least 1"),
    (["--device", "tpu"], "unknown device 'tpu'"),
    (["--output", "{tmp}/in.csv"], "exists and is not a directory"),
    (["--output", "{tmp}"], "holds the input"),
    (["--text-pair-column", "body"], "geep-model was trained on single texts"),
    (["--output", "{tmp}/geep-model/bench"], "inside the model directory"),
    (["--precision", "fp32,int4"], "unknown precision 'int4'; choose one of: fp32, int8, fp16, bf16"),
    (["--precision", "fp16"], "fp16 runs on cuda, not cpu"),
]


@pytest.mark.parametrize("extra, message", BAD, ids=[m for _, m in BAD])
def test_bad_input_is_one_line_and_exit_2(model_dir, data, tmp_path, capsys, extra, message):
    (tmp_path / "nolabels.csv").write_text("body\ngood movie\n")
    (tmp_path / "badlabels.csv").write_text("body,label\ngood movie,zz\n")
    args = {"--model": str(model_dir), "--data": str(data), "--output": str(tmp_path / "out")}
    extra = [e.replace("{tmp}", str(tmp_path)) for e in extra]
    for flag, value in zip(extra[::2], extra[1::2]):
        args[flag] = value
    assert bench_cli(*[x for kv in args.items() for x in kv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert message in err
    assert not (tmp_path / "out").exists() and not (model_dir / "bench").exists()


def test_a_non_empty_output_is_refused_without_overwrite(model_dir, data, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "bench.json").write_text("an earlier run")
    quick = ["--policies", "fastbert", "--grid-points", 2, "--timed-points", 2, "--repeats", 5, "--batch-sizes", 4,
             "--max-samples", 6]
    assert bench_cli("--model", model_dir, "--data", data, "--output", out, *quick) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not empty" in err and "--overwrite" in err
    assert (out / "bench.json").read_text() == "an earlier run"
    assert bench_cli("--model", model_dir, "--data", data, "--output", out, *quick, "--overwrite") == 0
    assert json.loads((out / "bench.json").read_text())["header"]["n"] == 6
