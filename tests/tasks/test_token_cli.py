"""Token classification through every command on a tiny encoder: train (CoNLL, task auto-detected), save/load,
info, predict (tags, per-word exit layers, entity spans; long sentences windowed), calibrate (a sentee knob against
an entity-F1 budget), bench; and the issue's bad inputs: one line, exit 2, nothing written."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from geep.cli.main import main
from geep.data.token_data import entity_spans
from geep.modeling.model import MultiExitClassifier
from tests.helpers import WORDS, save_tiny_encoder

FAST = ["--max-length", "12", "--epochs", "1", "--distil-epochs", "0", "--batch-size", "16", "--no-progress",
        "--head", "linear"]


def tag_of(word: str, previous: str) -> str:
    if word in ("good", "great"):
        return "B-X"
    return "I-X" if word == "movie" and previous in ("B-X", "I-X") else "O"


def sentences(n: int, seed: int = 0, longest: int = 14) -> list[tuple[list[str], list[str]]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = [rng.choice(WORDS[:24]) for _ in range(rng.randint(1, longest - 2))]
        if rng.random() < 0.5:  # an entity of two words
            at = rng.randint(0, len(words))
            words[at:at] = ["good", "movie"]
        tags = []
        for w in words:
            tags.append(tag_of(w, tags[-1] if tags else "O"))
        out.append((words, tags))
    return out


def write_conll(path: Path, rows) -> Path:
    path.write_text("".join("".join(f"{w} NN {t}\n" for w, t in zip(*row)) + "\n" for row in rows))
    return path


def cli(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        rc = main(argv)
    except SystemExit as e:
        rc = e.code
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("tokens")
    encoder = save_tiny_encoder(root / "enc")
    train = write_conll(root / "train.conll", sentences(40))
    assert main(["train", "--model", str(encoder), "--train", str(train), "--output", str(root / "model"), *FAST]) == 0
    return root


def test_train_detects_the_task_and_saves_a_token_model(trained):
    model = MultiExitClassifier.from_pretrained(trained / "model")
    assert model.config.task == "token-classification"
    assert model.label_names == ["B-X", "I-X", "O"]
    assert model.task.primary == "entity_f1"
    summary = json.loads((trained / "model" / "training_args.json").read_text())
    assert summary["task"]["name"] == "token-classification" and summary["data_sizes"]["table"] == 0
    assert "token-classification" in (trained / "model" / "README.md").read_text()
    # load gives the same outputs as the saved weights
    again = MultiExitClassifier.from_pretrained(trained / "model")
    enc = model.tokenize(["good movie the"])
    batch = {"input_ids": torch.tensor(enc["input_ids"]), "attention_mask": torch.ones(1, len(enc["input_ids"][0]))}
    assert torch.equal(model(**batch).exit_logits, again(**batch).exit_logits)


def test_info_says_the_task(trained, capsys):
    rc, out, _ = cli(["info", str(trained / "model")], capsys)
    assert rc == 0 and "token-classification" in out and "entity-f1" in out


@pytest.mark.parametrize("policy", ["full", "sentee", "oracle"])
def test_predict_writes_tags_exits_and_spans_per_sentence(trained, capsys, policy):
    rows = sentences(6, seed=3) + [([f"w{i}" for i in range(30)], ["O"] * 30)]  # the last: 30 words > 10 per row
    data = trained / "predict.jsonl"
    data.write_text("".join(json.dumps({"id": i, "tokens": w, "tags": t}) + "\n" for i, (w, t) in enumerate(rows)))
    out = trained / f"pred-{policy}.jsonl"
    rc, _, err = cli(["predict", "--model", str(trained / "model"), "--input", str(data), "--output", str(out),
                      "--policy", policy, "--no-progress", "--overwrite"], capsys)
    assert rc == 0, err
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in written] == list(range(len(rows)))
    for r, (words, _) in zip(written, rows):
        assert r["tokens"] == words and len(r["tags"]) == len(words) == len(r["exit_layers"])
        assert set(r["tags"]) <= {"B-X", "I-X", "O"}
        assert r["entities"] == entity_spans(words, r["tags"])
        assert r["exit_layer"] == max(r["exit_layers"]) and all(1 <= k <= 4 for k in r["exit_layers"])
        if policy == "full":
            assert set(r["exit_layers"]) == {4}


def test_calibrate_stores_a_sentee_knob_and_bench_reports_it(trained, capsys, tmp_path):
    dev = write_conll(tmp_path / "dev.conll", sentences(20, seed=7))
    import shutil

    model_dir = tmp_path / "model"
    shutil.copytree(trained / "model", model_dir)
    rc, out, err = cli(["calibrate", "--model", str(model_dir), "--dev", str(dev), "--max-accuracy-drop", "5",
                        "--grid-points", "5"], capsys)
    assert rc == 0, err
    config = json.loads((model_dir / "config.json").read_text())["geep"]
    assert "sentee" in config["default_knobs"]["fp32"]
    assert config["calibration"]["fp32"]["sentee"]["confidence"] is None  # entity F1: the point estimate rule
    rc, out, err = cli(["bench", "--model", str(model_dir), "--data", str(dev), "--output", str(tmp_path / "b"),
                        "--batch-sizes", "4", "--repeats", "5", "--warmup", "1", "--timed-points", "1",
                        "--grid-points", "5", "--no-progress"], capsys)
    assert rc == 0, err
    records = json.loads((tmp_path / "b" / "bench.json").read_text())["records"]
    assert {r["policy"] for r in records} >= {"full", "sentee", "oracle"}
    assert all(r["metric"] == "entity_f1" for r in records)


@pytest.mark.parametrize(("content", "message"), [
    ("good NN B-X\nmovie I-X\n\n", "line 2 has 2 columns"),
])
def test_ragged_conll_is_exit_2_and_nothing_written(trained, capsys, tmp_path, content, message):
    bad = tmp_path / "bad.conll"
    bad.write_text(content)
    out = tmp_path / "out"
    rc, _, err = cli(["train", "--model", str(trained / "enc"), "--train", str(bad), "--output", str(out), *FAST],
                     capsys)
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_bad_token_inputs_are_exit_2(trained, capsys, tmp_path):
    mismatch = tmp_path / "mismatch.jsonl"
    mismatch.write_text(json.dumps({"tokens": ["a", "b"], "tags": ["O"]}) + "\n")
    empty = tmp_path / "empty.jsonl"
    empty.write_text(json.dumps({"tokens": [], "tags": []}) + "\n" + json.dumps({"tokens": ["a"], "tags": ["O"]}) + "\n")
    sentences_file = tmp_path / "texts.jsonl"
    sentences_file.write_text(json.dumps({"text": "good movie", "label": "x"}) + "\n")
    unknown = tmp_path / "unknown.jsonl"
    unknown.write_text(json.dumps({"tokens": ["good"], "tags": ["B-Y"]}) + "\n")
    model = str(trained / "model")
    cases = [
        (["train", "--model", str(trained / "enc"), "--train", str(mismatch), "--output", str(tmp_path / "o1"), *FAST],
         "has 2 words but 1 tags"),
        (["train", "--model", str(trained / "enc"), "--train", str(empty), "--output", str(tmp_path / "o2"), *FAST],
         "empty sentence"),
        (["predict", "--model", model, "--input", str(sentences_file), "--output", str(tmp_path / "p1.jsonl")],
         "holds sentence data"),
        (["predict", "--model", model, "--input", str(unknown), "--output", str(tmp_path / "p2.jsonl"),
          "--policy", "oracle"], "never seen in training: 'B-Y'"),
        (["train", "--model", str(trained / "enc"), "--train", str(mismatch), "--output", str(tmp_path / "o3"),
          "--task", "classification", *FAST], "holds token-classification data"),
    ]
    for argv, message in cases:
        rc, _, err = cli(argv, capsys)
        assert rc == 2 and message in err and len(err.strip().splitlines()) == 1, (argv, err)
    assert not any((tmp_path / name).exists() for name in ("o1", "o2", "o3", "p1.jsonl", "p2.jsonl"))


def test_token_data_given_to_a_sentence_model_is_exit_2(tmp_path, capsys):
    encoder = save_tiny_encoder(tmp_path / "enc")
    texts = tmp_path / "texts.jsonl"
    texts.write_text("".join(json.dumps({"text": t, "label": l}) + "\n"
                             for t, l in [("good movie", "pos"), ("bad film", "neg")] * 10))
    assert main(["train", "--model", str(encoder), "--train", str(texts), "--output", str(tmp_path / "m"),
                 "--table-fraction", "0", *FAST]) == 0
    tokens = write_conll(tmp_path / "t.conll", sentences(3))
    rc, _, err = cli(["predict", "--model", str(tmp_path / "m"), "--input", str(tokens), "--output",
                      str(tmp_path / "p.jsonl")], capsys)
    assert rc == 2 and "holds token-classification data" in err
    assert not (tmp_path / "p.jsonl").exists()
