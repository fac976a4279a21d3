"""The hashee policy: tokens halt at their hashed layers inside the backend step, rows answer from the last layer,
FLOPs count each token's own layers, and a row's answer does not depend on its batch (fp32 and int8)."""

import random

import pytest
import torch
from transformers.masking_utils import create_bidirectional_mask

from geep.errors import GeepError
from geep.inference import predict, run_policy
from geep.modeling.token_hash import TokenHash, random_hash
from geep.runtime.flops import FlopsSpec
from geep.tokens import pad_token_ids
from tests import helpers

N_ROWS = 40


@pytest.fixture
def hashed(make_model):
    model = make_model(exit_layers=[4])
    model.set_token_hash(random_hash(99, 4, model.tokenizer.all_special_ids, seed=0))
    texts = helpers.random_texts(N_ROWS, seed=2)
    return model, texts, model.tokenize(texts)


@torch.no_grad()
def expected_outputs(model, encoded):
    """Each row alone, through transformers' own layers on the whole row, keeping the new state only for the tokens
    whose hashed layer is >= k (halted tokens copied forward), then the teacher: independent of the halting step."""
    out = []
    encoder = model.backbone.encoder
    for ids in encoded["input_ids"]:
        batch = pad_token_ids([ids], None, 0, torch.device("cpu"))
        x, mask = batch["input_ids"], batch["attention_mask"]
        h = encoder.embeddings(input_ids=x)
        layers = model.token_hash.layers[x]  # (1, T)
        attn = create_bidirectional_mask(config=encoder.config, inputs_embeds=h, attention_mask=mask)
        for k, layer in enumerate(encoder.encoder.layer, 1):
            new = layer(h, attention_mask=attn)
            new = new[0] if isinstance(new, tuple) else new
            h = torch.where((layers >= k)[..., None], new, h)
        out.append(torch.softmax(model.teacher(h, mask), -1)[0])
    return torch.stack(out)


def test_hashee_answers_as_the_plain_layers_with_halted_tokens_copied(hashed):
    model, texts, encoded = hashed
    layers = model.token_hash.layers
    halted = sum(int((layers[torch.tensor(ids)] < 4).sum()) for ids in encoded["input_ids"])
    assert halted > N_ROWS  # the hash really halts tokens before L
    result = predict(model, texts, policy="hashee", batch_size=8)
    torch.testing.assert_close(result.probabilities, expected_outputs(model, encoded), atol=1e-5, rtol=1e-5)
    assert result.exit_layer.tolist() == [4] * N_ROWS  # rows answer from the last layer
    full = predict(model, texts, policy="full", batch_size=8)
    assert (result.probabilities - full.probabilities).abs().max() > 1e-4  # halting changed the answers


def test_hashee_flops_count_each_tokens_own_layers(hashed):
    model, texts, encoded = hashed
    run = run_policy(model, encoded, "hashee", batch_size=8)
    H, I = 32, 37
    expected = 0
    for ids in encoded["input_ids"]:
        n = len(ids)
        layers = model.token_hash.layers[torch.tensor(ids)]
        for k in range(1, 5):
            a = int((layers >= k).sum())
            # Q, attention output, feed-forward for the a active tokens; K, V for all n; a x n attended pairs
            expected += 2 * (a * (2 * H * H + 2 * H * I) + n * 2 * H * H) + 4 * H * a * n if a else 0
    spec = FlopsSpec.from_model(model)
    heads = sum(n * rows * spec.head(k, T) for (k, rows, T), n in run.flops.head_calls.items())
    assert run.flops.layers == expected and run.flops.total == expected + heads
    # every token hashed to L: the count is full's, token by token
    model.set_token_hash(TokenHash(torch.full((99,), 4, dtype=torch.int64), "random", 1))
    every = run_policy(model, encoded, "hashee", batch_size=1)
    assert every.flops.layers == run_policy(model, encoded, "full", batch_size=1).flops.layers


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_a_row_answers_the_same_alone_and_in_any_batch(hashed, precision):
    """Within 1e-6 at fp32 and int8 (at int8 a row's layers are the same bits alone and in a batch, tests/runtime/
    test_token_halting.py; the fp32 exit head adds last-bit noise, as for every policy): a quantisation step moved by
    a batch-mate would show as 1e-4."""
    model, texts, encoded = hashed
    alone = run_policy(model, encoded, "hashee", batch_size=1, precision=precision)
    for size, seed in ((7, 0), (32, 1)):
        order = list(range(N_ROWS))
        random.Random(seed).shuffle(order)
        batched = run_policy(model, encoded, "hashee", batch_size=size, order=order, precision=precision)
        assert torch.equal(batched.label_ids, alone.label_ids)
        assert float((batched.probabilities - alone.probabilities).abs().max()) <= 1e-6
    through_predict = predict(model, texts, policy="hashee", batch_size=32, precision=precision)
    assert float((through_predict.probabilities - alone.probabilities).abs().max()) <= 1e-6


def test_int8_hashee_agrees_with_fp32(hashed):
    model, texts, _ = hashed
    int8 = predict(model, texts, policy="hashee", precision="int8")
    fp32 = predict(model, texts, policy="hashee")
    assert float((int8.probabilities - fp32.probabilities).abs().max()) < 0.05


def test_hashee_on_a_model_without_a_hash_is_one_line(make_model):
    model = make_model()
    with pytest.raises(GeepError) as e:
        predict(model, ["a film"], policy="hashee")
    assert "\n" not in str(e.value) and "token hash" in str(e.value) and "--objective hashee" in str(e.value)
