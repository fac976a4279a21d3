"""HashEE's token-to-layer hash (Sun et al., "A Simple Hash-Based Early Exiting Approach For Language Understanding
and Generation", Findings of ACL 2022, Sec. 3.2 "Hash functions"): every vocabulary token is given, before the
model runs, the layer it exits at; a token hashed to layer l runs layers 1..l and is copied forward after it.

Two hashes, as the paper's (and its released code's ``utils.py``: ``random_cons_hash_tokens``, ``hash_tokens``):

- ``random``: each token id gets a bucket drawn uniformly at random (seeded), once for the whole vocabulary;
- ``frequency``: the tokens seen in the training rows, sorted by how often they occur (most frequent first), are cut
  into ``buckets`` buckets of as many distinct tokens each (the last takes the remainder); the most frequent bucket
  exits first. Tokens never seen in training exit at L.

Bucket b (0-based) is layer ``1 + b * (L // buckets)`` (``buckets`` = L by default: one bucket per layer; the code's
``interval = (max_layer - 1) // num_buckets``, its ``max_layer - 1`` being L). The tokenizer's special tokens
([CLS], [SEP], ...) always exit at L, as in the code; so does padding, which never runs. Departure: the code counts
frequencies over the training and dev rows; geep counts the training rows only.

Saved as ``token_hash.safetensors`` (one int64 tensor ``layers`` (V,), no pickle) beside the model; the config's
``token_hash`` section names the file, the kind and the buckets.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from geep.errors import GeepError
from geep.io import atomic_path

HASH_NAME = "token_hash.safetensors"
HASH_KINDS = ("frequency", "random")


@dataclass
class TokenHash:
    """layers (V,) int64: the layer in 1..L each token id exits at; kind and buckets: how it was built."""

    layers: Tensor
    kind: str
    buckets: int

    @property
    def vocab_size(self) -> int:
        return self.layers.shape[0]

    def token_layers(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Each token's exit layer (B, T) int64 for ids (B, T); 0 at padding (a padded position never runs)."""
        layers = self.layers.to(input_ids.device)[input_ids]  # (B, T)
        return layers.masked_fill(~attention_mask.bool(), 0)

    def describe(self) -> dict[str, Any]:
        """What config.json records: the file, the kind, the buckets."""
        return {"file": HASH_NAME, "kind": self.kind, "buckets": self.buckets}

    def save(self, path: Path) -> None:
        with atomic_path(path) as tmp:
            save_file({"layers": self.layers.detach().cpu().to(torch.int64).contiguous()}, str(tmp),
                      metadata={"kind": self.kind, "buckets": json.dumps(self.buckets)})


def _bucket_layer(bucket: int, num_layers: int, buckets: int) -> int:
    return 1 + bucket * (num_layers // buckets)


def _check_buckets(num_layers: int, buckets: int | None) -> int:
    buckets = num_layers if buckets is None else buckets
    if isinstance(buckets, bool) or not isinstance(buckets, int) or not 1 <= buckets <= num_layers:
        raise GeepError(f"the token hash needs 1..{num_layers} buckets (one per layer at most), got {buckets!r}")
    return buckets


def random_hash(vocab_size: int, num_layers: int, special_ids: Iterable[int], *, buckets: int | None = None,
                seed: int = 0) -> TokenHash:
    """The paper's random hash: each token id's bucket drawn uniformly (seeded); special tokens at L."""
    buckets = _check_buckets(num_layers, buckets)
    drawn = torch.randint(0, buckets, (vocab_size,), generator=torch.Generator().manual_seed(seed))  # (V,)
    layers = 1 + drawn * (num_layers // buckets)
    layers[[i for i in special_ids if 0 <= i < vocab_size]] = num_layers
    return TokenHash(layers.to(torch.int64), "random", buckets)


def frequency_hash(token_ids: Sequence[Sequence[int]], vocab_size: int, num_layers: int,
                   special_ids: Iterable[int], *, buckets: int | None = None) -> TokenHash:
    """The paper's frequency hash over the training rows' token ids (see the module docstring): the most frequent
    tokens exit first, unseen and special tokens at L. Ties in frequency are broken by token id."""
    buckets = _check_buckets(num_layers, buckets)
    special = {i for i in special_ids}
    counts = Counter(t for row in token_ids for t in row if t not in special)
    ranked = sorted(counts, key=lambda t: (-counts[t], t))
    per_bucket = max(1, len(ranked) // buckets)
    layers = torch.full((vocab_size,), num_layers, dtype=torch.int64)
    bucket = 0
    for i, token in enumerate(ranked):
        bucket = min(i // per_bucket, buckets - 1)  # the last bucket takes the remainder
        if 0 <= token < vocab_size:
            layers[token] = _bucket_layer(bucket, num_layers, buckets)
    return TokenHash(layers, "frequency", buckets)


def build_hash(kind: str, token_ids: Sequence[Sequence[int]], vocab_size: int, num_layers: int,
               special_ids: Iterable[int], *, buckets: int | None = None, seed: int = 0) -> TokenHash:
    """The ``kind`` hash (``HASH_KINDS``); GeepError for another kind."""
    if kind == "frequency":
        return frequency_hash(token_ids, vocab_size, num_layers, special_ids, buckets=buckets)
    if kind == "random":
        return random_hash(vocab_size, num_layers, special_ids, buckets=buckets, seed=seed)
    raise GeepError(f"unknown token hash {kind!r}; choose one of: {', '.join(HASH_KINDS)}")


def load_token_hash(path: Path, vocab_size: int, num_layers: int, kind: str, buckets: int) -> TokenHash:
    """Reads ``path``; GeepError (one line) when it is missing, unreadable or made for another model."""
    if not path.is_file():
        raise GeepError(f"{path.parent} names a token hash in config.json, but {path.name} is missing; train the "
                        "model again with `geep train --objective hashee`")
    try:
        layers = load_file(str(path))["layers"]
    except Exception as e:  # safetensors' own errors for a truncated or foreign file; a missing key
        raise GeepError(f"cannot read {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    if layers.dim() != 1 or layers.shape[0] != vocab_size or layers.dtype != torch.int64:
        raise GeepError(f"{path} holds {tuple(layers.shape)} {layers.dtype} layers, but the model needs ({vocab_size},) "
                        "int64, one per vocabulary token")
    if layers.numel() and not bool(((layers >= 1) & (layers <= num_layers)).all()):
        raise GeepError(f"{path} hashes tokens to layers outside 1..{num_layers}")
    return TokenHash(layers, kind, buckets)


__all__ = ["HASH_KINDS", "HASH_NAME", "TokenHash", "build_hash", "frequency_hash", "load_token_hash", "random_hash"]
