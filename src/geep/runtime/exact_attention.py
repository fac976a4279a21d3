"""Attention over each row's own length: a row's attention does not depend on its batch-mates' padding.

Attention is the one operation of an encoder layer that mixes tokens, and it sums over the keys: the softmax's
normaliser and the product with the values are reductions over the padded length T. A row of n tokens padded to T
adds only zeros to those sums, yet its result differs from the row alone in the last bits, because a kernel blocks
and vectorises a reduction by its length (the tail of a length-n reduction is summed in another order than inside a
length-T one). In fp32 that is noise (1e-7), but int8 turns a last-bit difference at a rounding boundary into a whole
quantisation step of the next Linear's input (2.5e-4 in a MiniLM row's probabilities; ``geep.runtime.int8``).

:func:`own_length_attention` takes the padding out of the reductions: rows are grouped by their own length n (the
number of keys they may attend; geep pads on the right) and each group runs transformers' own SDPA attention
(``sdpa_attention_forward``) on its rows cut to (n, n), without a mask when nothing inside is masked. A row's
attention then has the same shape, the same kernel and so the same bits whatever batch it is in: alone, the row is a
group of one at length n. Padded query positions get zeros (no real token attends to a padded key, and the exit
heads pool over real tokens only).

It is registered with transformers' ``AttentionInterface`` (and its mask with ``AttentionMaskInterface``: the
boolean masks of SDPA) under :data:`NAME`, and a model is switched to it through its config's attention
implementation (``PreTrainedModel.set_attn_implementation``): no modelling file is copied or patched, and any
encoder family whose attention runs through the interface (BERT, RoBERTa, DistilBERT, ALBERT, ELECTRA, ModernBERT,
...) takes it; :func:`supports_own_length_attention` says whether one does.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from transformers import AttentionInterface, PreTrainedModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

NAME = "geep_own_length"


def own_length_attention(module: nn.Module, query: Tensor, key: Tensor, value: Tensor,
                         attention_mask: Tensor | None, **kwargs) -> tuple[Tensor, None]:
    """Attention of each row over its own length (see the module docstring), in the AttentionInterface's contract.

    query (B, h, T, d), key and value (B, h_kv, T, d); attention_mask (B, 1 or h, T or 1, T), boolean (True: attend)
    or additive, or None (nothing padded) -> (output (B, T, h, d), None), as ``sdpa_attention_forward`` returns.
    """
    B, heads, T, d = query.shape
    if attention_mask is None:  # nothing padded: one group, every row at length T
        return sdpa_attention_forward(module, query, key, value, None, **kwargs)
    if key.shape[2] != T or attention_mask.shape[-1] != T or attention_mask.shape[-2] not in (1, T):
        raise ValueError(f"own-length attention is self-attention: queries {T}, keys {key.shape[2]}, "
                         f"mask {tuple(attention_mask.shape)}")
    for name, arg in kwargs.items():
        if isinstance(arg, Tensor) and arg.dim() > 0:
            raise ValueError(f"own-length attention cannot cut the per-row argument {name!r} to each row's length")
    if attention_mask.dtype == torch.bool:
        attends = attention_mask
    else:  # additive: 0 where a key is attended, a large negative number where it is not
        attends = attention_mask > torch.finfo(attention_mask.dtype).min / 2
    valid = attends.any(1).any(1)  # (B, T): keys some query of the row may attend
    lengths = valid.sum(1)  # (B,)
    if not torch.equal(valid, torch.arange(T, device=valid.device) < lengths[:, None]):
        raise ValueError("own-length attention needs right padding: a row's keys are its first n positions")
    padding_only = bool((attends == valid[:, None, None, :]).all())  # no structure but the padding (no window)
    out = query.new_zeros((B, T, heads, d))  # padded query positions stay 0
    for n in lengths.unique().tolist():
        if n == 0:
            continue
        rows = (lengths == n).nonzero().squeeze(1)  # (b,)
        first, count = int(rows[0]), len(rows)
        consecutive = int(rows[-1]) - first + 1 == count  # geep's batches are sorted by length: views, no copies
        take = (lambda t: t[first:first + count]) if consecutive else (lambda t: t.index_select(0, rows))
        mask = None
        if not padding_only:
            mask = take(attention_mask)[..., :n, :n]  # (b, 1|h, n, n)
            if bool(mask.all() if mask.dtype == torch.bool else (mask == 0).all()):
                mask = None  # nothing masked inside: the same call as the row alone
        group, _ = sdpa_attention_forward(module, take(query)[:, :, :n], take(key)[:, :, :n], take(value)[:, :, :n],
                                          mask, **kwargs)  # (b, n, h, d)
        if consecutive:
            out[first:first + count, :n] = group
        else:
            out[rows, :n] = group
    return out, None


AttentionInterface.register(NAME, own_length_attention)
AttentionMaskInterface.register(NAME, sdpa_mask)


def supports_own_length_attention(encoder: PreTrainedModel) -> bool:
    """Whether ``encoder``'s attention runs through transformers' AttentionInterface (so it can be switched to
    :func:`own_length_attention`); MPNet and DeBERTa compute theirs in their modelling files."""
    return bool(getattr(encoder, "_supports_attention_backend", False)) and encoder._can_set_attn_implementation()


def use_own_length_attention(encoder: PreTrainedModel) -> None:
    """Switches ``encoder`` (in place) to :func:`own_length_attention`; the masks its layers take are then SDPA's."""
    encoder.set_attn_implementation(NAME)
