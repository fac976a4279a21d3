"""Token halting: one layer on the active tokens only, checked against transformers' own layer on the full sequence."""

import copy

import pytest
import torch
import transformers
from transformers.masking_utils import create_bidirectional_mask

from geep.errors import GeepError
from geep.modeling.families import family_for
from geep.runtime.exact_attention import use_own_length_attention
from geep.runtime.int8 import quantize_linears
from geep.runtime.token_halting import halting_layer_step
from tests.helpers import tiny_bert_config

LENGTHS = [9, 3, 7, 9, 1]


def encoder(seed: int = 0, **overrides) -> transformers.BertModel:
    torch.manual_seed(seed)
    return transformers.BertModel(tiny_bert_config(num_layers=2, **overrides)).eval()


def batch(lengths=LENGTHS, seed: int = 0, H: int = 32):
    """Hidden states (B, T, H), the padding mask (B, T) bool (right padded) and a random active set (B, T)."""
    g = torch.Generator().manual_seed(seed)
    B, T = len(lengths), max(lengths)
    hidden = torch.randn(B, T, H, generator=g)
    valid = torch.arange(T)[None] < torch.tensor(lengths)[:, None]
    active = (torch.rand(B, T, generator=g) < 0.5) & valid
    return hidden, valid, active


def full_layer(model, hidden, valid):
    """transformers' own layer 1 on the whole padded batch, with the mask transformers makes for it."""
    mask = create_bidirectional_mask(config=model.config, inputs_embeds=hidden, attention_mask=valid.long())
    out = model.encoder.layer[0](hidden, attention_mask=mask)
    return out[0] if isinstance(out, tuple) else out


def step(model, hidden, valid, active):
    return halting_layer_step(family_for(model.config), model.encoder.layer[0], hidden, valid, active)


@torch.no_grad()
def test_every_token_active_is_the_plain_layer():
    model = encoder()
    hidden, valid, _ = batch()
    out = step(model, hidden, valid, valid)
    torch.testing.assert_close(out[valid], full_layer(model, hidden, valid)[valid], atol=1e-5, rtol=1e-5)
    assert torch.equal(out[~valid], hidden[~valid])  # padding untouched


@torch.no_grad()
def test_halted_tokens_are_unchanged_and_active_ones_are_the_full_layers_output():
    model = encoder()
    hidden, valid, active = batch()
    out = step(model, hidden, valid, active)
    assert torch.equal(out[~active], hidden[~active])  # halted (and padded) positions: the very same bits
    # an active token attends every valid token's current state, the halted ones' copied states included: the full
    # layer on the same hidden states, read at the active positions
    expected = full_layer(model, hidden, valid)[active]
    torch.testing.assert_close(out[active], expected, atol=1e-5, rtol=1e-5)


def test_the_step_is_differentiable_through_halted_keys_and_values():
    model = encoder()
    hidden, valid, active = batch()
    h1 = hidden.clone().requires_grad_(True)
    h2 = hidden.clone().requires_grad_(True)
    weights = torch.randn(hidden.shape, generator=torch.Generator().manual_seed(3))
    (step(model, h1, valid, active) * weights).sum().backward()
    reference = torch.where(active[..., None], full_layer(model, h2, valid), h2)
    (reference * weights).sum().backward()
    assert h1.grad[valid & ~active].abs().sum() > 0  # halted tokens are read as keys and values
    torch.testing.assert_close(h1.grad, h2.grad, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_no_active_token_returns_the_states():
    model = encoder()
    hidden, valid, _ = batch()
    assert torch.equal(step(model, hidden, valid, torch.zeros_like(valid)), hidden)


def int8_copy(model):
    prepared = copy.deepcopy(model)
    quantize_linears(prepared.encoder.layer[0])
    use_own_length_attention(prepared)
    return prepared


@pytest.mark.parametrize("precision", ["fp32", "int8"])
@torch.no_grad()
def test_a_row_gets_the_same_states_alone_as_in_any_batch(precision):
    """fp32 within 1e-6; int8 the same bits (per-token Linears, each row's attention at its own shape)."""
    same = torch.equal if precision == "int8" else lambda a, b: bool((a - b).abs().max() <= 1e-6)
    model = encoder() if precision == "fp32" else int8_copy(encoder())
    hidden, valid, active = batch(LENGTHS)
    out = step(model, hidden, valid, active)
    others, other_valid, other_active = batch([2, 11, 5], seed=1)
    for i, n in enumerate(LENGTHS):
        alone = step(model, hidden[i:i + 1, :n], valid[i:i + 1, :n], active[i:i + 1, :n])
        assert same(out[i, :n], alone[0])
        # the same row among rows of other lengths and other active sets, padded to 11, in the middle
        T = 11
        mixed_h = torch.zeros(3, T, 32)
        mixed_v = torch.zeros(3, T, dtype=torch.bool)
        mixed_a = torch.zeros(3, T, dtype=torch.bool)
        mixed_h[0], mixed_v[0], mixed_a[0] = others[1], other_valid[1], other_active[1]
        mixed_h[1, :n], mixed_v[1, :n], mixed_a[1, :n] = hidden[i, :n], valid[i, :n], active[i, :n]
        mixed_h[2, :5], mixed_v[2, :5], mixed_a[2, :5] = others[2, :5], other_valid[2, :5], other_active[2, :5]
        mixed = step(model, mixed_h, mixed_v, mixed_a)
        assert same(mixed[1, :n], alone[0])


@torch.no_grad()
def test_int8_every_token_active_is_the_int8_layer():
    model = int8_copy(encoder())
    hidden, valid, _ = batch()
    out = step(model, hidden, valid, valid)
    torch.testing.assert_close(out[valid], full_layer(model, hidden, valid)[valid], atol=1e-5, rtol=1e-5)


def test_a_family_without_halting_modules_is_refused_in_one_line():
    config = transformers.DistilBertConfig(vocab_size=99, dim=32, n_layers=1, n_heads=2, hidden_dim=37)
    model = transformers.DistilBertModel(config).eval()
    hidden, valid, active = batch([4, 2])
    with pytest.raises(GeepError) as e:
        halting_layer_step(family_for(config), model.transformer.layer[0], hidden, valid, active)
    assert "\n" not in str(e.value) and "DistilBERT" in str(e.value)
