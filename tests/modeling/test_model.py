import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import BertForSequenceClassification

from tests.helpers import random_batch, tiny_bert_config, tiny_tokenizer
from geep.modeling.config import GeepConfig
from geep.errors import GeepError
from geep import build_table, predict
from geep.modeling.model import MultiExitClassifier


def test_exit_layers_always_include_the_teacher(make_model):
    model = make_model(exit_layers=[1, 2])
    assert model.exit_layers == [1, 2, 4]
    out = model(**random_batch())
    assert out.exit_logits.shape == (3, 5, 3) and out.diverse_logits is None


def test_forward_exit_logits_equal_stepping(make_model):
    model = make_model(head="linear", pooling="mean")
    batch = random_batch()
    out = model(**batch)
    state = model.embed(**batch)
    for i, k in enumerate(model.exit_layers):
        state = model.run_layers(state, k)
        torch.testing.assert_close(out.exit_logits[i], model.exit_logits(state))


def test_two_layer_model_has_no_diverse_terms(make_model):
    model = make_model(num_layers=2)
    out = model(**random_batch(), diverse=True)
    assert out.diverse_logits.shape == (0, 5, 3)


def test_save_load_round_trip(make_model, tmp_path):
    model = make_model(head="attention", pooling="mean", exit_layers=[1, 3])
    model.config.default_knobs = {"fp32": {"fastbert": {"threshold": 0.3}},
                                  "int8": {"geep-verify": {"tau": 0.5, "continue_threshold": 0.2}}}
    model.save_pretrained(tmp_path / "m")
    loaded = MultiExitClassifier.from_pretrained(tmp_path / "m")
    batch = random_batch()
    assert torch.equal(model(**batch).exit_logits, loaded(**batch).exit_logits)
    assert loaded.config == model.config
    raw = json.loads((tmp_path / "m" / "config.json").read_text())
    assert raw["geep"]["format_version"] == 2 and raw["model_type"] == "bert"
    a = predict(model, ["good movie", "bad plot"])
    b = predict(loaded, ["good movie", "bad plot"])
    assert a.labels == b.labels and torch.equal(a.probabilities, b.probabilities)


def test_load_names_missing_and_unexpected_keys(make_model, tmp_path):
    model = make_model()
    model.save_pretrained(tmp_path / "m")
    weights = load_file(str(tmp_path / "m" / "model.safetensors"))
    weights.pop("heads.1.classifier.bias")
    weights["heads.9.extra"] = torch.zeros(1)
    save_file(weights, str(tmp_path / "m" / "model.safetensors"))
    with pytest.raises(GeepError, match=r"missing keys: heads\.1\.classifier\.bias; unexpected keys: heads\.9\.extra"):
        MultiExitClassifier.from_pretrained(tmp_path / "m")


def test_unknown_format_version_is_a_clear_error(make_model, tmp_path):
    make_model().save_pretrained(tmp_path / "m")
    path = tmp_path / "m" / "config.json"
    raw = json.loads(path.read_text())
    raw["geep"]["format_version"] = 99
    path.write_text(json.dumps(raw))
    with pytest.raises(GeepError, match="unknown geep format_version 99"):
        MultiExitClassifier.from_pretrained(tmp_path / "m")


def test_version_1_knobs_read_as_fp32_knobs_and_damaged_knobs_are_one_line():
    v1 = {"num_layers": 4, "label_names": ["a", "b"], "format_version": 1,
          "default_knobs": {"fastbert": 0.3, "pabee": 2, "geep-verify": 0.6}}
    config = GeepConfig.from_dict(v1)
    assert config.format_version == 2
    assert config.default_knobs == {"fp32": {"fastbert": {"threshold": 0.3}, "pabee": {"patience": 2},
                                             "geep-verify": {"tau": 0.6}}}
    assert config.stored_knob("fp32", "pabee") == {"patience": 2} and config.stored_knob("int8", "pabee") is None
    assert config.drop_knobs(["geep-verify", "geep"]) == ["geep-verify"]
    assert "geep-verify" not in config.default_knobs["fp32"]
    for bad in ({"fp32": {"fastbert": 0.3}}, {"fp32": {"fastbert": {"threshold": "x"}}}, [1]):
        with pytest.raises(GeepError, match="default_knobs in config.json must map precision"):
            GeepConfig.from_dict({**v1, "format_version": 2, "default_knobs": bad})
    with pytest.raises(GeepError, match="the geep section of config.json must be an object, got str"):
        GeepConfig.from_dict("oops")


def test_config_validation():
    with pytest.raises(GeepError, match="exit layers must lie in 1..4"):
        GeepConfig(num_layers=4, label_names=["a", "b"], exit_layers=[0, 5])
    with pytest.raises(GeepError, match="unknown pooling"):
        GeepConfig(num_layers=4, label_names=["a", "b"], pooling="max")


def test_fine_tuned_classifier_becomes_the_teacher(tmp_path):
    torch.manual_seed(0)
    config = tiny_bert_config(num_labels=2, id2label={0: "neg", 1: "pos"}, label2id={"neg": 0, "pos": 1})
    hf = BertForSequenceClassification(config).eval()
    hf.save_pretrained(tmp_path / "ft")
    tiny_tokenizer(tmp_path / "ft").save_pretrained(tmp_path / "ft")
    model = MultiExitClassifier.from_encoder(tmp_path / "ft", head="attention", pooling="mean").eval()
    assert model.label_names == ["neg", "pos"]
    assert model.config.head_spec(4) == ("linear", "first") and model.config.head_spec(1) == ("attention", "mean")
    batch = random_batch()
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).exit_logits[-1], hf(**batch).logits, atol=1e-5, rtol=1e-5)


def test_from_encoder_errors(tmp_path):
    with pytest.raises(GeepError, match="no model directory"):
        MultiExitClassifier.from_encoder(tmp_path / "nope", ["a", "b"])


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "config.json").write_text("{not json"), "cannot read"),
    (lambda d: (d / "model.safetensors").write_bytes(b"\x00" * 16), "cannot read"),
    (lambda d: (d / "config.json").write_text(json.dumps({"geep": {"format_version": 1}})), "damaged"),
])
def test_a_damaged_model_directory_is_a_clear_error(make_model, tmp_path, damage, message):
    make_model().save_pretrained(tmp_path / "m")
    damage(tmp_path / "m")
    with pytest.raises(GeepError, match=message):
        MultiExitClassifier.from_pretrained(tmp_path / "m")


def test_a_missing_table_file_leaves_the_other_policies_working(make_model, tmp_path):
    model = make_model()
    build_table(model, ["good movie", "bad plot", "the film"])
    model.save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "exit_table.safetensors").unlink()
    loaded = MultiExitClassifier.from_pretrained(tmp_path / "m")
    assert predict(loaded, "good", policy="fastbert").labels
    with pytest.raises(GeepError, match="no exit table"):
        predict(loaded, "good", policy="geep")
