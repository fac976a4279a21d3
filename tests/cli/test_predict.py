import csv
import json
import os

import pytest
import torch

from geep.inference.executor import Executor
from geep.cli.main import main
from geep.inference import predict
from geep.modeling.model import MultiExitClassifier
from tests.helpers import write_csv
from tests.helpers import random_texts

TEXTS = random_texts(12, seed=11)
LABELS = ["c0", "c1", "c2"] * 4




@pytest.fixture
def model_dir(make_model, tmp_path):
    model = make_model(exit_layers=[1, 2])
    model.config.text_column = "body"
    model.save_pretrained(tmp_path / "model")
    return tmp_path / "model"


@pytest.fixture
def data(tmp_path):
    return write_csv(tmp_path / "in.csv", ["id", "body", "label"],
                     [(f"row{i}", text, label) for i, (text, label) in enumerate(zip(TEXTS, LABELS))])


def predict_cli(model_dir, data, out, *extra):
    return main(["predict", "--model", str(model_dir), "--input", str(data), "--output", str(out),
                 "--no-progress", *extra])


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("policy, knob", [("full", None), ("fastbert", "1"), ("pabee", "1"), ("oracle", None)])
def test_jsonl_rows_in_input_order(model_dir, data, tmp_path, policy, knob):
    out = tmp_path / "out.jsonl"
    extra = ["--policy", policy, "--batch-size", "5"] + (["--threshold", knob] if knob else [])
    assert predict_cli(model_dir, data, out, *extra) == 0
    rows = read_jsonl(out)
    assert [r["id"] for r in rows] == [f"row{i}" for i in range(12)]
    assert set(rows[0]) == {"id", "prediction", "probability", "probabilities", "exit_layer"}
    model = MultiExitClassifier.from_pretrained(model_dir)
    expected = predict(model, TEXTS, policy=policy, knob=None if knob is None else float(knob),
                             labels=LABELS if policy == "oracle" else None)
    assert [r["prediction"] for r in rows] == expected.labels
    assert [r["exit_layer"] for r in rows] == expected.exit_layer.tolist()
    for r, p in zip(rows, expected.probabilities):
        assert list(r["probabilities"]) == ["c0", "c1", "c2"]
        assert r["probabilities"][r["prediction"]] == r["probability"] == pytest.approx(float(p.max()), abs=1e-6)
        assert sum(r["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    if policy == "fastbert":
        assert {r["exit_layer"] for r in rows} == {1}  # threshold 1: everyone at the first exit
    if policy == "oracle":
        assert all(r["prediction"] == label or r["exit_layer"] == 4 for r, label in zip(rows, LABELS))


def test_csv_output_and_no_id_column(model_dir, tmp_path):
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps({"body": t}) + "\n" for t in TEXTS))
    out = tmp_path / "out.csv"
    assert predict_cli(model_dir, data, out) == 0
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12
    assert list(rows[0]) == ["prediction", "probability", "probabilities", "exit_layer"]
    probs = json.loads(rows[0]["probabilities"])
    assert list(probs) == ["c0", "c1", "c2"] and float(rows[0]["probability"]) == probs[rows[0]["prediction"]]
    assert {r["exit_layer"] for r in rows} == {"4"}


def test_explicit_id_column(model_dir, data, tmp_path):
    out = tmp_path / "out.jsonl"
    assert predict_cli(model_dir, data, out, "--id-column", "label") == 0
    assert [r["id"] for r in read_jsonl(out)] == LABELS


@pytest.mark.parametrize("where", ["engine", "writer"])
def test_interrupted_run_leaves_no_partial_output(model_dir, data, tmp_path, monkeypatch, capsys, where):
    out = tmp_path / "out.jsonl"
    out.write_text("previous results\n")
    before = sorted(p.name for p in tmp_path.iterdir())
    if where == "engine":
        calls = []
        real = Executor.step

        def step(self):  # the second step is interrupted
            calls.append(1)
            if len(calls) == 2:
                raise KeyboardInterrupt
            return real(self)

        monkeypatch.setattr(Executor, "step", step)
    else:
        import geep.cli.predict as cli_predict

        real_line, written = cli_predict.jsonl_line, []

        def jsonl_line(row):  # interrupted after 5 rows are already in the temporary file
            written.append(1)
            if len(written) == 6:
                raise KeyboardInterrupt
            return real_line(row)

        monkeypatch.setattr(cli_predict, "jsonl_line", jsonl_line)
    assert predict_cli(model_dir, data, out, "--batch-size", "4", "--overwrite") == 130
    assert "interrupted" in capsys.readouterr().err
    reached = len(calls) if where == "engine" else len(written)
    assert reached == (2 if where == "engine" else 6)  # it was interrupted where meant to be
    assert out.read_text() == "previous results\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no temporary file left behind
    monkeypatch.undo()
    fresh = tmp_path / "fresh.jsonl"
    assert predict_cli(model_dir, data, fresh) == 0 and len(read_jsonl(fresh)) == 12


def test_failed_run_does_not_create_output(model_dir, data, tmp_path, monkeypatch, capsys):
    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(Executor, "step", boom)
    with pytest.raises(RuntimeError):
        predict_cli(model_dir, data, tmp_path / "out.jsonl")
    assert not (tmp_path / "out.jsonl").exists()


BAD = [
    (["--input", "{tmp}/missing.csv"], "no such file"),
    (["--text-column", "nope"], "has no column 'nope'"),
    (["--id-column", "nope"], "has no column 'nope'"),
    (["--policy", "nope"], "unknown policy 'nope'; choose one of: full, fastbert"),
    (["--policy", "fastbert", "--threshold", "2"], r"fastbert threshold must be a number in [0, 1], got 2"),
    (["--policy", "pabee", "--threshold", "1.5"], r"pabee threshold must be an integer in [0, 2]"),
    (["--policy", "full", "--threshold", "0.5"], "the full policy takes no threshold"),
    (["--policy", "fastbert", "--continue-threshold", "0.2"], "a continue threshold is geep-verify's knob"),
    (["--output", "{tmp}/out.txt"], "--output must end in .jsonl or .csv"),
    (["--output", "{tmp}/no/such/dir/out.jsonl"], "does not exist"),
    (["--model", "{tmp}/nomodel"], "no geep model at"),
    (["--policy", "oracle", "--input", "{tmp}/nolabels.csv"], "has no column 'label'"),
    (["--policy", "oracle", "--input", "{tmp}/badlabels.csv"], "never seen in training: 'zz'"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--device", "tpu"], "unknown device 'tpu'"),
    (["--text-pair-column", "body"], "was trained on single texts (no text pair column); drop the flag"),
    (["--precision", "int4"], "unknown precision 'int4'; choose one of: fp32, int8, fp16, bf16"),
    (["--precision", "fp16"], "fp16 runs on cuda, not cpu"),
]


@pytest.mark.parametrize("extra, message", BAD, ids=[m for _, m in BAD])
def test_bad_input_is_one_line_and_exit_2(model_dir, data, tmp_path, capsys, extra, message):
    (tmp_path / "nolabels.csv").write_text("body\ngood movie\n")
    (tmp_path / "badlabels.csv").write_text("body,label\ngood movie,zz\n")
    args = {"--model": str(model_dir), "--input": str(data), "--output": str(tmp_path / "out.jsonl")}
    extra = [e.replace("{tmp}", str(tmp_path)) for e in extra]
    for flag, value in zip(extra[::2], extra[1::2]):
        args[flag] = value
    argv = ["predict", "--no-progress"] + [x for kv in args.items() for x in kv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert message in err
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given without CUDA")
def test_cuda_without_cuda(model_dir, data, tmp_path, capsys):
    assert predict_cli(model_dir, data, tmp_path / "o.jsonl", "--device", "cuda") == 2
    assert "CUDA is not available" in capsys.readouterr().err


# ------------------------------------------------------------------------ outputs: never an input, never silently
def test_an_existing_output_is_refused_without_overwrite(model_dir, data, tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    out.write_text("previous results\n")
    assert predict_cli(model_dir, data, out) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "exists" in err and "--overwrite" in err
    assert out.read_text() == "previous results\n"
    assert predict_cli(model_dir, data, out, "--overwrite") == 0
    assert len(read_jsonl(out)) == 12


def _same_as_input(tmp_path, data, model_dir):
    """(input, output) pairs that name one file, or an output inside the model directory."""
    (model_dir / "table_data.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    os.symlink(data, tmp_path / "link.csv")
    os.link(data, tmp_path / "hard.csv")
    (tmp_path / "sub").mkdir()
    return {
        "same path": (data, data),
        "relative path": (data, f"sub/../{data.name}"),
        "symlink to the input": (data, tmp_path / "link.csv"),
        "hard link to the input": (data, tmp_path / "hard.csv"),
        "the model's table data": (model_dir / "table_data.jsonl", model_dir / "table_data.jsonl"),
        "a new file inside the model": (data, model_dir / "labels.jsonl"),
    }


CASES = ["same path", "relative path", "symlink to the input", "hard link to the input", "the model's table data",
         "a new file inside the model"]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("overwrite", [False, True])
def test_an_output_that_is_an_input_or_in_the_model_is_refused(model_dir, data, tmp_path, capsys, monkeypatch,
                                                                case, overwrite):
    monkeypatch.chdir(tmp_path)
    source, out = _same_as_input(tmp_path, data, model_dir)[case]
    before = {p: p.read_bytes() for p in (data, model_dir / "table_data.jsonl")}
    model_files = sorted(p.name for p in model_dir.iterdir())
    assert predict_cli(model_dir, source, out, *(["--overwrite"] if overwrite else [])) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert ("is the input" in err) if "model" not in case else ("inside the model directory" in err)
    assert {p: p.read_bytes() for p in before} == before
    assert sorted(p.name for p in model_dir.iterdir()) == model_files



def test_rows_without_text_are_predicted_keep_their_ids_and_are_counted(model_dir, tmp_path, caplog):
    data = tmp_path / "in.jsonl"
    rows = [{"id": "a", "body": "good movie"}, {"id": "b", "body": ""}, {"id": "c", "body": "   "},
            {"id": "d", "body": None}, {"id": "e"}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out.jsonl"
    with caplog.at_level("WARNING"):
        assert predict_cli(model_dir, data, out) == 0
    assert [r["id"] for r in read_jsonl(out)] == ["a", "b", "c", "d", "e"]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "4 of 5 rows have no text in column 'body'" in warnings[0]


def test_a_first_row_over_128_kb_is_predicted(model_dir, tmp_path):
    """The CSV header check once died on a first data row holding a field over 128 KB (a 20k-word document)."""
    data = write_csv(tmp_path / "long.csv", ["body"], [[" ".join(["good"] * 30_000)], ["bad plot"]])
    out = tmp_path / "out.jsonl"
    assert predict_cli(model_dir, data, out) == 0
    assert len(read_jsonl(out)) == 2


def test_int8_predictions_match_fp32_labels(model_dir, data, tmp_path):
    assert predict_cli(model_dir, data, tmp_path / "fp32.jsonl", "--policy", "pabee", "--threshold", "1") == 0
    assert predict_cli(model_dir, data, tmp_path / "int8.jsonl", "--policy", "pabee", "--threshold", "1",
                       "--precision", "int8") == 0
    fp32, int8 = read_jsonl(tmp_path / "fp32.jsonl"), read_jsonl(tmp_path / "int8.jsonl")
    assert [r["id"] for r in int8] == [r["id"] for r in fp32]
    assert sum(a["prediction"] == b["prediction"] for a, b in zip(fp32, int8)) >= len(fp32) - 1
