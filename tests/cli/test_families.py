"""Every encoder family from the command line: a fine-tuned classifier of each family trained (exits only, its own
head kept), calibrated and predicted with every policy at fp32 and int8, and every model geep cannot step refused
in one line with exit status 2, nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from geep.cli.main import main
from geep.policies import policies_for
from tests import families
from tests.helpers import random_texts, tiny_tokenizer, write_csv

FAST = ["--max-length", "24", "--epochs", "1", "--distil-epochs", "1", "--batch-size", "16", "--no-progress"]


def cli(argv: list[str], capsys) -> tuple[int, str, str]:
    capsys.readouterr()  # what building the test's models printed (transformers' progress bars)
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:
        rc = e.code
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def labelled(path: Path, n: int, seed: int) -> tuple[Path, list[str]]:
    texts = random_texts(n, seed=seed, max_words=15)
    labels = [families.LABELS[i % 3] for i in range(n)]
    rows = [(f"r{i}", t, y) for i, (t, y) in enumerate(zip(texts, labels))]
    return write_csv(path, ["id", "text", "label"], rows), texts


@pytest.mark.parametrize("case", families.CASES)
def test_train_calibrate_predict_every_policy(case, tmp_path, capsys):
    """``geep train --freeze-backbone`` on a fine-tuned classifier trains the exits only (its own head stays the
    teacher), builds the exit table; ``geep calibrate`` stores knobs; ``geep predict`` runs every policy at fp32
    and int8; under ``full`` the written probabilities are the HF model's own."""
    ft = families.save(tmp_path / "ft", case, fine_tuned=True)
    train, _ = labelled(tmp_path / "train.csv", 64, seed=1)
    dev, texts = labelled(tmp_path / "dev.csv", 24, seed=2)
    out = tmp_path / "geep"
    rc, _, err = cli(["train", "--model", ft, "--train", train, "--output", out, "--freeze-backbone",
                      "--table-fraction", "0.25", "--head", "linear", "--objective", "fastbert", *FAST], capsys)
    assert rc == 0, err
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == families.config(case).model_type and (out / "exit_table.safetensors").is_file()
    rc, _, err = cli(["calibrate", "--model", out, "--dev", dev, "--max-accuracy-drop", "50", "--grid-points", "5"],
                     capsys)
    assert rc == 0, err
    assert json.loads((out / "config.json").read_text())["geep"]["default_knobs"]["fp32"]
    hf = AutoModelForSequenceClassification.from_pretrained(ft).eval()
    tokenizer = AutoTokenizer.from_pretrained(ft)
    for precision in ("fp32", "int8"):
        for policy in policies_for("classification"):
            path = tmp_path / f"{policy}-{precision}.jsonl"
            argv = ["predict", "--model", out, "--input", dev, "--output", path, "--policy", policy, "--precision",
                    precision, "--no-progress"]
            rc, _, err = cli(argv, capsys)
            assert rc == 0, (policy, precision, err)
            rows = [json.loads(line) for line in path.read_text().splitlines()]
            assert [r["id"] for r in rows] == [f"r{i}" for i in range(24)]
            assert all(1 <= r["exit_layer"] <= 4 and r["prediction"] in families.LABELS for r in rows)
    rows = [json.loads(line) for line in (tmp_path / "full-fp32.jsonl").read_text().splitlines()]
    written = torch.tensor([[r["probabilities"][name] for name in families.LABELS] for r in rows])
    batch = tokenizer(texts, padding=True, truncation=True, max_length=24, return_tensors="pt")
    if families.config(case).model_type in ("distilbert", "mpnet", "modernbert"):
        batch.pop("token_type_ids", None)
    with torch.no_grad():
        expected = hf(**batch).logits.softmax(-1)
    torch.testing.assert_close(written, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("case", ["deberta-v3", "modernbert"])
def test_bench_runs_on_other_families(case, tmp_path, capsys):
    ft = families.save(tmp_path / "ft", case, fine_tuned=True)
    train, _ = labelled(tmp_path / "train.csv", 48, seed=1)
    dev, _ = labelled(tmp_path / "dev.csv", 16, seed=2)
    out = tmp_path / "geep"
    assert cli(["train", "--model", ft, "--train", train, "--output", out, "--freeze-backbone", "--head",
                "attention", "--objective", "geep", *FAST], capsys)[0] == 0
    rc, stdout, err = cli(["bench", "--model", out, "--data", dev, "--output", tmp_path / "bench", "--repeats", 5,
                           "--timed-points", 1, "--grid-points", 3, "--batch-sizes", 8, "--no-progress"], capsys)
    assert rc == 0, err
    assert (tmp_path / "bench" / "bench.json").is_file()


def _gpt2(directory: Path) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=99, n_positions=64)
    GPT2LMHeadModel(config).save_pretrained(directory)
    tiny_tokenizer(directory).save_pretrained(directory)
    return directory


def _t5(directory: Path) -> Path:
    from transformers import T5Config, T5ForConditionalGeneration

    T5ForConditionalGeneration(T5Config(num_layers=2, d_model=32, num_heads=2, vocab_size=99, d_ff=37, d_kv=16)
                               ).save_pretrained(directory)
    tiny_tokenizer(directory).save_pretrained(directory)
    return directory


def _unknown_type(directory: Path) -> Path:
    families.save(directory, "bert")
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "model_type": "no-such-encoder"}))
    return directory


def _wrong_shape(directory: Path) -> Path:
    families.save(directory, "distilbert")
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "hidden_dim": 40}))  # the weights have 37
    return directory


def _missing_weight(directory: Path) -> Path:
    families.save(directory, "modernbert", fine_tuned=True)
    weights = load_file(str(directory / "model.safetensors"))
    weights.pop("classifier.weight")
    save_file(weights, str(directory / "model.safetensors"), metadata={"format": "pt"})
    return directory


@pytest.mark.parametrize("make, message", [
    (_gpt2, "error: gpt2 is a decoder (causal attention); geep steps encoders: BERT"),
    (_t5, "error: t5 is an encoder-decoder model; geep steps encoders: BERT"),
    (_unknown_type, "error: cannot read "),
    (_wrong_shape, "error: cannot load the model in "),
    (_missing_weight, "do not match its config.json: missing classifier.weight"),
])
def test_a_model_geep_cannot_step_is_one_line_exit_2_nothing_written(make, message, tmp_path, capsys):
    model = make(tmp_path / "model")
    train, _ = labelled(tmp_path / "train.csv", 32, seed=1)
    rc, stdout, err = cli(["train", "--model", model, "--train", train, "--output", tmp_path / "out", *FAST], capsys)
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


def test_a_geep_directory_of_a_decoder_is_refused_by_predict(tmp_path, capsys):
    """A geep model directory whose backbone config names a decoder (edited by hand) is refused on load."""
    from geep.modeling.model import MultiExitClassifier

    ft = families.save(tmp_path / "ft", "bert", fine_tuned=True)
    MultiExitClassifier.from_encoder(ft).save_pretrained(tmp_path / "geep")
    config = json.loads((tmp_path / "geep" / "config.json").read_text())
    (tmp_path / "geep" / "config.json").write_text(json.dumps({**config, "is_decoder": True}))
    data, _ = labelled(tmp_path / "in.csv", 4, seed=3)
    rc, _, err = cli(["predict", "--model", tmp_path / "geep", "--input", data, "--output", tmp_path / "out.jsonl"],
                     capsys)
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1
    assert lines[0].startswith("error: this bert model is configured as a decoder (causal attention); geep steps "
                               "encoders: BERT, RoBERTa")
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize("case", ["deberta-v3", "modernbert", "mpnet"])
def test_the_server_answers_as_offline_prediction(case, tmp_path):
    """``geep serve``'s app over a model of another family: concurrent requests of fastbert get what offline
    prediction gives each text alone."""
    import asyncio

    from geep.inference import predict
    from geep.inference import resolve_run
    from geep.modeling.model import MultiExitClassifier
    from tests.helpers import make_decisive
    from tests.serving.conftest import make_app, safe_texts, serving
    from tests.serving.test_app import clients

    ft = families.save(tmp_path / "ft", case, fine_tuned=True)
    texts = random_texts(40, seed=6, max_words=20)
    model = make_decisive(MultiExitClassifier.from_encoder(ft, head="attention", max_length=24).eval(), texts)
    knob = resolve_run(model, "fastbert", 0.5).knob
    pool = safe_texts(model, texts, "fastbert", knob)
    assert len(pool) >= 20
    expected = {t: predict(model, [t], policy="fastbert", knob=knob) for t in set(pool)}
    app = make_app(model, policy="fastbert", threshold=0.5, batching="layer", max_batch=8)
    with serving(app) as url:
        answered = asyncio.run(clients(url, pool, 8, 3, seed=1))
    exits = set()
    for batch, r in answered:
        assert r.status_code == 200, r.text
        for text, got in zip(batch, r.json()["predictions"]):
            one = expected[text]
            assert (got["label"], got["exit_layer"]) == (one.labels[0], int(one.exit_layer[0]))
            exits.add(got["exit_layer"])
    assert len(exits) >= 2


@pytest.mark.timeout(180)
def test_predict_with_ray_on_another_family(tmp_path, capsys):
    """``geep predict --ray`` over a DeBERTa-v3 model: the same rows as single-process predict."""
    ray = pytest.importorskip("ray")
    ft = families.save(tmp_path / "ft", "deberta-v3", fine_tuned=True)
    train, _ = labelled(tmp_path / "train.csv", 48, seed=1)
    out = tmp_path / "geep"
    assert cli(["train", "--model", ft, "--train", train, "--output", out, "--freeze-backbone", "--head", "linear",
                "--objective", "fastbert", *FAST], capsys)[0] == 0
    (tmp_path / "in").mkdir()
    data, _ = labelled(tmp_path / "in" / "part.csv", 20, seed=4)
    single = tmp_path / "single.jsonl"
    assert cli(["predict", "--model", out, "--input", data, "--output", single, "--policy", "fastbert",
                "--threshold", "0.5", "--no-progress"], capsys)[0] == 0
    from geep.integrations import ray_data

    ray_data.start_local_ray(2)
    try:
        ray_data.run_job(tmp_path / "in", tmp_path / "ray", out, policy="fastbert", knob=0.5, concurrency=1,
                         map_batch_size=8)
        rows, _ = ray_data.read_output(tmp_path / "ray")
    finally:
        ray.shutdown()
    want = {r["id"]: r for r in map(json.loads, single.read_text().splitlines())}
    assert sorted(rows["id"]) == sorted(want)
    for row in rows.to_dict("records"):
        assert (row["prediction"], row["exit_layer"]) == (want[row["id"]]["prediction"], want[row["id"]]["exit_layer"])
        assert row["probability"] == pytest.approx(want[row["id"]]["probability"], abs=1e-5)
