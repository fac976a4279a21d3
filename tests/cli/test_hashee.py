"""`geep train --objective hashee` then `geep predict --policy hashee` from the command line, and the bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from geep.modeling import MultiExitClassifier
from geep.modeling.token_hash import HASH_NAME
from tests.cli.test_train import FAST, cli, write_csv
from tests.helpers import FILLER, save_tiny_encoder


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory) -> Path:
    return save_tiny_encoder(tmp_path_factory.mktemp("tiny-enc"))


@pytest.mark.parametrize("kind", ["frequency", "random"])
def test_train_hashee_then_predict_with_its_hash(encoder_dir, tmp_path, capsys, kind):
    data = write_csv(tmp_path / "train.csv", n=60)
    out = tmp_path / "model"
    rc, _, err = cli(["train", "--model", str(encoder_dir), "--train", str(data), "--objective", "hashee",
                      "--hash", kind, "--output", str(out), *FAST], capsys)
    assert rc == 0, err
    assert (out / HASH_NAME).is_file() and not (out / "table_data.jsonl").exists()  # no exit table for hashee
    args = json.loads((out / "training_args.json").read_text())
    assert args["token_hash"] == {"file": HASH_NAME, "kind": kind, "buckets": 4}
    assert set(args["dev_accuracy"]) == {"4"}  # one exit, the last layer
    model = MultiExitClassifier.from_pretrained(out)
    assert model.exit_layers == [4] and model.token_hash.kind == kind
    layers = model.token_hash.layers
    assert layers[model.tokenizer.all_special_ids].tolist() == [4] * len(model.tokenizer.all_special_ids)
    if kind == "frequency":  # the 11 words of the data (fillers, good, bad) spread over the layers; unseen ones at L
        seen = layers[model.tokenizer.convert_tokens_to_ids(FILLER + ["good", "bad"])]
        assert int(seen.min()) == 1 and int(seen.max()) == 4
        assert layers[model.tokenizer.convert_tokens_to_ids(["w5", "w40", "sport"])].tolist() == [4, 4, 4]

    rc, stdout, err = cli(["info", str(out)], capsys)
    assert rc == 0 and f"token hash:     {HASH_NAME}: {kind}, 4 buckets (policy hashee)" in stdout, err
    preds = tmp_path / "preds.jsonl"
    rc, _, err = cli(["predict", "--model", str(out), "--input", str(data), "--policy", "hashee",
                      "--output", str(preds), "--no-progress"], capsys)
    assert rc == 0, err
    rows = [json.loads(line) for line in preds.read_text().splitlines()]
    assert len(rows) == 60 and {row["exit_layer"] for row in rows} == {4}


def test_the_hashee_policy_on_a_model_without_a_hash_is_one_line_exit_2(encoder_dir, tmp_path, capsys):
    data = write_csv(tmp_path / "train.csv", n=40)
    out = tmp_path / "model"
    rc, _, err = cli(["train", "--model", str(encoder_dir), "--train", str(data), "--objective", "fine-tune",
                      "--exit-layers", "4", "--table-fraction", "0", "--output", str(out), *FAST], capsys)
    assert rc == 0, err
    preds = tmp_path / "preds.jsonl"
    rc, _, err = cli(["predict", "--model", str(out), "--input", str(data), "--policy", "hashee",
                      "--output", str(preds), "--no-progress"], capsys)
    assert rc == 2 and err.count("\n") == 1 and "token hash" in err
    assert not preds.exists()


@pytest.mark.parametrize("extra, message", [
    (["--objective", "geep", "--hash", "random"], "--hash and --hash-buckets apply to --objective hashee only"),
    (["--objective", "hashee", "--exit-layers", "2,4"], "predicts from the last layer alone"),
    (["--objective", "hashee", "--exit-module", "lte"], "takes no --exit-module"),
    (["--objective", "hashee", "--hash-buckets", "9"], "1..4 buckets"),
])
def test_bad_hashee_flags_are_one_line_and_write_nothing(encoder_dir, tmp_path, capsys, extra, message):
    data = write_csv(tmp_path / "train.csv", n=40)
    out = tmp_path / "model"
    rc, _, err = cli(["train", "--model", str(encoder_dir), "--train", str(data), *extra, "--output", str(out),
                      *FAST], capsys)
    assert rc == 2 and err.count("\n") == 1 and message in err, err
    assert not out.exists()
