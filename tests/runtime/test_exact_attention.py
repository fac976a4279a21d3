"""Attention over each row's own length: the same as padded attention, and a row's bits do not depend on its batch."""

import pytest
import torch
import torch.nn.functional as F
import transformers
from torch import nn

from geep.runtime.exact_attention import (NAME, own_length_attention, supports_own_length_attention,
                                          use_own_length_attention)
from geep.runtime.int8 import quantize_linears

LENGTHS = [9, 3, 17, 2, 12, 17]
TINY = dict(vocab_size=99, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96,
            max_position_embeddings=64)
FAMILIES = {  # tiny configs of encoder families whose attention runs through transformers' AttentionInterface
    "bert": lambda: transformers.BertConfig(**TINY),
    "roberta": lambda: transformers.RobertaConfig(**TINY, pad_token_id=1),
    "electra": lambda: transformers.ElectraConfig(**TINY, embedding_size=32),
    "albert": lambda: transformers.AlbertConfig(**TINY, embedding_size=32),
    "distilbert": lambda: transformers.DistilBertConfig(vocab_size=99, dim=64, n_layers=2, n_heads=4, hidden_dim=96,
                                                        max_position_embeddings=64),
    "modernbert": lambda: transformers.ModernBertConfig(  # layers 1 and 3 attend within a window of 8 tokens
        vocab_size=99, hidden_size=64, num_hidden_layers=3, num_attention_heads=4, intermediate_size=96,
        max_position_embeddings=64, local_attention=8, global_attn_every_n_layers=2, pad_token_id=0,
        bos_token_id=2, eos_token_id=3, cls_token_id=2, sep_token_id=3),
}


def encoder_attention() -> nn.Module:
    module = nn.Module()
    module.is_causal = False  # as an encoder's attention modules say (transformers' sdpa reads it)
    return module


def padded(lengths, heads=4, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    B, T = len(lengths), max(lengths)
    q, k, v = (torch.randn(B, heads, T, d, generator=g) for _ in range(3))
    keep = torch.arange(T)[None] < torch.tensor(lengths)[:, None]  # (B, T)
    return q, k, v, keep[:, None, None, :].expand(B, 1, T, T)  # bool (B, 1, T, T), as SDPA's masks are


def test_each_row_attends_over_its_own_tokens_and_padded_queries_get_zeros():
    q, k, v, mask = padded(LENGTHS)
    out, weights = own_length_attention(encoder_attention(), q, k, v, mask, scaling=8 ** -0.5)
    assert weights is None and out.shape == (6, 17, 4, 8)  # (B, T, heads, d), as transformers' sdpa returns
    for i, n in enumerate(LENGTHS):  # the reference: plain SDPA on the row alone, cut to its length
        expected = F.scaled_dot_product_attention(q[i:i + 1, :, :n], k[i:i + 1, :, :n], v[i:i + 1, :, :n])
        torch.testing.assert_close(out[i, :n], expected[0].transpose(0, 1), atol=1e-6, rtol=0)
        assert not out[i, n:].any()


def test_an_additive_mask_and_no_mask_are_read_as_well():
    q, k, v, mask = padded(LENGTHS)
    additive = torch.zeros(mask.shape).masked_fill(~mask, torch.finfo(torch.float32).min)
    module = encoder_attention()
    expected = own_length_attention(module, q, k, v, mask)[0]
    assert torch.equal(own_length_attention(module, q, k, v, additive)[0], expected)
    assert torch.equal(own_length_attention(module, q, k, v, mask[:, :, :1])[0], expected)  # (B, 1, 1, T) broadcast
    full = [17] * 3
    q, k, v, _ = padded(full)
    expected = F.scaled_dot_product_attention(q, k, v).transpose(1, 2)
    torch.testing.assert_close(own_length_attention(module, q, k, v, None)[0], expected, atol=1e-6, rtol=0)


def test_left_padding_is_refused():
    q, k, v, mask = padded(LENGTHS)
    with pytest.raises(ValueError, match="right padding"):
        own_length_attention(encoder_attention(), q, k, v, mask.flip(-1))


def _rows(seed=0):
    g = torch.Generator().manual_seed(seed)
    T = max(LENGTHS)
    ids = torch.randint(5, 99, (len(LENGTHS), T), generator=g)
    mask = (torch.arange(T)[None] < torch.tensor(LENGTHS)[:, None]).long()
    return ids * mask, mask


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_family_through_the_interface_is_exact_at_int8(family):
    """A tiny encoder of each family, switched by its config alone: the same hidden states as its own attention in
    fp32 (to fp32's noise), and, with int8 Linears, a row alone is the same bits as the row in a padded batch."""
    torch.manual_seed(0)
    model = transformers.AutoModel.from_config(FAMILIES[family]()).eval()
    assert supports_own_length_attention(model)
    ids, mask = _rows()
    with torch.no_grad():
        reference = model(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, T, H), the family's attention
        use_own_length_attention(model)
        assert model.config._attn_implementation == NAME
        ours = model(input_ids=ids, attention_mask=mask).last_hidden_state
        for i, n in enumerate(LENGTHS):
            torch.testing.assert_close(ours[i, :n], reference[i, :n], atol=1e-5, rtol=0)
        quantize_linears(model)
        together = model(input_ids=ids, attention_mask=mask).last_hidden_state
        for i, n in enumerate(LENGTHS):
            alone = model(input_ids=ids[i:i + 1, :n], attention_mask=mask[i:i + 1, :n]).last_hidden_state
            assert torch.equal(alone[0], together[i, :n]), (family, i)


@pytest.mark.parametrize("config", [lambda: transformers.MPNetConfig(**TINY),
                                    lambda: transformers.DebertaV2Config(**TINY)], ids=["mpnet", "deberta-v2"])
def test_families_that_compute_their_own_attention_are_told_apart(config):
    assert not supports_own_length_attention(transformers.AutoModel.from_config(config()))
