"""The keys of the exit table: distinct tokens (and adjacent token pairs) of each row, as batched tensor ops.

Shared by building the table and querying it. A key is a token id, or for bigrams the exact int64 ``a * V + b``.
Padding and special tokens are never keys.
"""

from __future__ import annotations

import torch
from torch import Tensor

SENTINEL = torch.iinfo(torch.int64).max  # sorts after every real key

# --------------------------------------------------------------------------------------------------------
# Key extraction shared by build and predict
# --------------------------------------------------------------------------------------------------------


def valid_mask(input_ids: Tensor, attention_mask: Tensor, special: Tensor) -> Tensor:
    """(B, T) bool: attended and not a special token."""
    return attention_mask.bool() & ~torch.isin(input_ids, special)


def pairs(input_ids: Tensor, valid: Tensor, vocab_size: int) -> tuple[Tensor, Tensor]:
    """Bigram keys ``a * V + b`` of adjacent positions (B, T-1) and their validity (B, T-1)."""
    keys = input_ids[:, :-1] * vocab_size + input_ids[:, 1:]  # (B, T-1)
    return keys, valid[:, :-1] & valid[:, 1:]


def row_distinct(keys: Tensor, mask: Tensor, key_space: int) -> tuple[Tensor, Tensor]:
    """Distinct (row, key) pairs of a chunk, sorted by row then key: rows (M,), keys (M,)."""
    rows = torch.arange(keys.shape[0], device=keys.device).unsqueeze(1).expand_as(keys)  # (n, T)
    codes = torch.unique((rows * key_space + keys)[mask])  # (M,) sorted, distinct
    return codes // key_space, codes % key_space


def first_occurrence(keys: Tensor, mask: Tensor) -> Tensor:
    """(B, T) bool: True at one position of each distinct masked key in each row (its first in sorted order)."""
    masked = torch.where(mask, keys, torch.full_like(keys, SENTINEL))
    ordered, perm = masked.sort(dim=1, stable=True)  # (B, T)
    first = torch.ones_like(mask)
    first[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    first &= ordered != SENTINEL
    return torch.zeros_like(mask).scatter_(1, perm, first)  # back to the original positions


def check_ids(input_ids: Tensor, attention_mask: Tensor, vocab_size: int) -> None:
    if input_ids.dim() != 2 or attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"input_ids and attention_mask must both be (B, T), got {tuple(input_ids.shape)} "
            f"and {tuple(attention_mask.shape)}"
        )
    if input_ids.dtype != torch.long:
        raise ValueError(f"input_ids must be int64, got {input_ids.dtype}")
    if input_ids.numel() and (input_ids.min() < 0 or input_ids.max() >= vocab_size):
        raise ValueError(f"token ids must lie in 0..{vocab_size - 1} (vocab_size of the table)")


def merge_codes(codes: Tensor, counts: Tensor, new_codes: Tensor, new_counts: Tensor) -> tuple[Tensor, Tensor]:
    """Add (new_codes, new_counts) into the sorted distinct (codes, counts); returns the merged pair."""
    merged, inverse = torch.unique(torch.cat([codes, new_codes]), return_inverse=True)  # (M,)
    total = torch.zeros_like(merged).index_add_(0, inverse, torch.cat([counts, new_counts]))
    return merged, total


def codes_to_table(codes: Tensor, counts: Tensor, num_layers: int) -> tuple[Tensor, Tensor]:
    """Sorted distinct ``key * L + layer`` codes with counts -> sorted keys (K,) and counts (K, L)."""
    keys, layers = codes // num_layers, codes % num_layers  # keys come out sorted
    uniq, inverse = torch.unique_consecutive(keys, return_inverse=True)  # (K,)
    table = torch.zeros((uniq.shape[0], num_layers), dtype=torch.long, device=codes.device)
    table[inverse, layers] = counts  # each (key, layer) appears once
    return uniq, table
