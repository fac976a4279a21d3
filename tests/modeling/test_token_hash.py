"""HashEE's token-to-layer hash: the paper's random and frequency hashes, and saved with the model (no pickle)."""

import json

import pytest
import torch
from safetensors.torch import load_file

from geep.errors import GeepError
from geep.modeling import MultiExitClassifier
from geep.modeling.token_hash import HASH_NAME, build_hash, frequency_hash, random_hash

SPECIAL = [0, 1, 2, 3, 4]


def test_the_frequency_hash_sends_the_most_frequent_tokens_to_the_first_layers():
    # token 10 occurs 6 times, 11: 5, 12: 4, 13: 3, 14: 2, 15: 1; specials (2, 3) are never counted
    rows = [[2, 10, 10, 10, 11, 11, 12, 3], [2, 10, 10, 10, 11, 11, 11, 12, 12, 12, 13, 13, 13, 14, 14, 15, 3]]
    h = frequency_hash(rows, 20, 3, SPECIAL)
    # 6 distinct tokens in 3 buckets of 2: {10, 11} -> 1, {12, 13} -> 2, {14, 15} -> 3
    assert h.layers[[10, 11, 12, 13, 14, 15]].tolist() == [1, 1, 2, 2, 3, 3]
    assert h.layers[SPECIAL].tolist() == [3] * 5  # special tokens run every layer
    assert h.layers[[5, 19]].tolist() == [3, 3]  # tokens never seen in training too
    # 2 buckets over 3 layers: bucket b exits at 1 + b * (3 // 2)
    assert frequency_hash(rows, 20, 3, SPECIAL, buckets=2).layers[[10, 12, 13, 15]].tolist() == [1, 1, 2, 2]


def test_the_random_hash_is_seeded_uniform_and_keeps_special_tokens_last():
    a, b = random_hash(1000, 4, SPECIAL, seed=3), random_hash(1000, 4, SPECIAL, seed=3)
    assert torch.equal(a.layers, b.layers) and not torch.equal(a.layers, random_hash(1000, 4, SPECIAL, seed=4).layers)
    assert a.layers[SPECIAL].tolist() == [4] * 5
    counts = torch.bincount(a.layers[5:], minlength=5)[1:]
    assert counts.min() > 200  # about 250 each
    assert set(random_hash(1000, 6, SPECIAL, buckets=3).layers[5:].tolist()) == {1, 3, 5}


@pytest.mark.parametrize("buckets", [0, 5, True])
def test_buckets_out_of_range_are_one_line(buckets):
    with pytest.raises(GeepError) as e:
        build_hash("random", [], 10, 4, SPECIAL, buckets=buckets)
    assert "\n" not in str(e.value)


def test_a_hash_is_saved_as_safetensors_and_json_and_loaded_with_the_model(make_model, tmp_path):
    model = make_model(exit_layers=[4])
    model.set_token_hash(random_hash(99, 4, SPECIAL, seed=1))
    model.save_pretrained(tmp_path / "m")
    assert load_file(str(tmp_path / "m" / HASH_NAME))["layers"].dtype == torch.int64
    config = json.loads((tmp_path / "m" / "config.json").read_text())["geep"]
    assert config["token_hash"] == {"file": HASH_NAME, "kind": "random", "buckets": 4}
    loaded = MultiExitClassifier.from_pretrained(tmp_path / "m")
    assert torch.equal(loaded.token_hash.layers, model.token_hash.layers)
    (tmp_path / "m" / HASH_NAME).unlink()
    with pytest.raises(GeepError, match="token_hash.safetensors is missing"):
        MultiExitClassifier.from_pretrained(tmp_path / "m")


def test_a_hash_for_another_model_is_refused(make_model):
    model = make_model()
    with pytest.raises(GeepError):
        model.set_token_hash(random_hash(50, 4, SPECIAL))  # 50 tokens, the model has 99
    with pytest.raises(GeepError):
        model.set_token_hash(random_hash(99, 6, SPECIAL))  # layers up to 6, the model has 4
