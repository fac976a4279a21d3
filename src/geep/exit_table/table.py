"""The token exit table of GEEP: predict a row's exit layer from its tokens, before running the model.

Layers are numbered 1..L. The table is built from rows whose exit layer is known (measured once by running
the model). For every key k (a token id, or with ``ngram=2`` also an adjacent token pair) it holds the
histogram ``n[k, l]`` of the exit layers of the rows that contain k, counted once per row, so that
``N_k = sum_l n[k, l]`` is k's document frequency. It also holds the histogram of all rows' exit layers,
whose normalised form is the prior ``pi`` (L,).

A row's predicted exit distribution ``q`` (L,) is an IDF-weighted mean over its distinct keys::

    p(l | k) = (n[k, l] + a * pi[l]) / (N_k + a)            a = smoothing
    w_k      = log(N / N_k)                                  N = rows in the table
    q(l)     = sum_k w_k p(l | k) / sum_k w_k

Unseen keys (N_k = 0) are skipped; a row with no usable key, or with total weight 0, gets ``pi``. A key that
occurs in every row has weight 0, which is what lets one rare marker token outvote dozens of filler tokens.

Storage: unigram counts are a dense ``(V, L)`` tensor indexed by token id. Bigram (a, b) has the exact int64
key ``a * V + b`` (no hash collisions); the bigram table is a sorted vector of the keys seen plus their
``(K, L)`` counts, queried with ``torch.searchsorted``. Everything stays tensor-resident, and build and
lookup are batched tensor ops that run unchanged on CPU or CUDA.

Bigram back-off (``ngram=2``): a bigram key is *usable* when ``N_k >= min_count``. Every valid position of a
row (attended, not a special token) is covered either by a usable bigram that contains it, or else by its
own unigram key. The row's key set is then the distinct usable bigrams plus the distinct unigrams of the
uncovered positions, each counted once, and all of them enter the same weighted mean with their own IDF.
A bigram pair is two valid tokens at adjacent positions; a special token between two tokens breaks the pair.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from geep.exit_table.combine import COMBINERS, check_tau, layers_from_distribution
from geep.exit_table.keys import (check_ids, codes_to_table, first_occurrence, merge_codes, pairs, row_distinct,
                                  valid_mask)

logger = logging.getLogger(__name__)

FORMAT = "geep-exit-table"
FORMAT_VERSION = 1
WEIGHTINGS = ("idf", "none")
_MAX_CODE = 2**62  # composite (row, key) codes stay below this

# --------------------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------------------


class ExitTable:
    """Token-level exit-layer histograms (unigram, optionally bigram) and the prediction built on them.

    Tensors (all on one device; counts are int64):
        exit_counts     (L,)     rows per exit layer; ``pi = exit_counts / N``
        unigram_counts  (V, L)   n[token, l]
        unigram_df      (V,)     N_token (derived: row sums)
        bigram_keys     (K,)     sorted distinct keys ``a * V + b`` (ngram=2 only, else None)
        bigram_counts   (K, L)   n[key, l] (ngram=2 only, else None)
        bigram_df       (K,)     N_key (derived)

    Use :meth:`build` to make one from data and :meth:`load` to read one back; the constructor takes the
    stored tensors and checks their shapes.
    """

    def __init__(
        self,
        *,
        exit_counts: Tensor,
        unigram_counts: Tensor,
        bigram_keys: Tensor | None,
        bigram_counts: Tensor | None,
        num_layers: int,
        vocab_size: int,
        special_ids: Sequence[int],
        ngram: int,
        min_count: int,
        smoothing: float,
        combine: str = "mean",
    ) -> None:
        _check_params(num_layers, vocab_size, ngram, min_count, smoothing, combine)
        L, V = num_layers, vocab_size
        if exit_counts.shape != (L,) or unigram_counts.shape != (V, L):
            raise ValueError(
                f"expected exit_counts ({L},) and unigram_counts ({V}, {L}), got "
                f"{tuple(exit_counts.shape)} and {tuple(unigram_counts.shape)}"
            )
        if ngram == 2:
            if bigram_keys is None or bigram_counts is None:
                raise ValueError("an ngram=2 table needs bigram_keys and bigram_counts")
            if bigram_keys.dim() != 1 or bigram_counts.shape != (bigram_keys.shape[0], L):
                raise ValueError(
                    f"expected bigram_keys (K,) and bigram_counts (K, {L}), got "
                    f"{tuple(bigram_keys.shape)} and {tuple(bigram_counts.shape)}"
                )
        elif bigram_keys is not None or bigram_counts is not None:
            raise ValueError("bigram tensors given for an ngram=1 table")
        self.num_layers, self.vocab_size, self.ngram = L, V, ngram
        self.min_count, self.smoothing, self.combine = int(min_count), float(smoothing), combine
        self.special_ids = tuple(sorted({int(i) for i in special_ids}))
        self.exit_counts = exit_counts.long()
        self.num_rows = int(self.exit_counts.sum())
        if self.num_rows < 1:
            raise ValueError("an exit table needs at least one row")
        self.unigram_counts = unigram_counts.long()
        self.unigram_df = self.unigram_counts.sum(dim=1)  # (V,)
        self.bigram_keys = bigram_keys.long() if bigram_keys is not None else None
        self.bigram_counts = bigram_counts.long() if bigram_counts is not None else None
        self.bigram_df = self.bigram_counts.sum(dim=1) if self.bigram_counts is not None else None  # (K,)
        device = self.exit_counts.device
        self.pi = self.exit_counts.double() / self.num_rows  # (L,)
        self._special = torch.tensor(self.special_ids, dtype=torch.long, device=device)

    # ---------------------------------------------------------------------------------------------- build

    @classmethod
    def build(
        cls,
        input_ids: Tensor,
        attention_mask: Tensor,
        exit_layers: Tensor,
        *,
        num_layers: int,
        vocab_size: int,
        special_ids: Sequence[int],
        ngram: int = 1,
        min_count: int = 2,
        smoothing: float = 1.0,
        chunk_size: int = 1024,
        combine: str = "mean",
    ) -> "ExitTable":
        """Count, for every key, the exit layers of the rows that contain it (once per row).

        Args:
            input_ids: (N, T) int64 token ids in 0..vocab_size-1.
            attention_mask: (N, T); 0 marks padding.
            exit_layers: (N,) each row's measured exit layer in 1..num_layers.
            special_ids: token ids never used as keys (CLS, SEP, PAD, ...).
            ngram: 1 for unigram keys; 2 adds bigram keys (and keeps the unigram table for back-off).
            min_count: a bigram is used at prediction time only if it occurs in at least this many rows.
            smoothing: a in ``(n[k, l] + a * pi[l]) / (N_k + a)``.
            chunk_size: rows processed at a time; bounds memory, never changes the result.

        The tensors land on ``input_ids``'s device. Deterministic: the same inputs give identical tensors.
        """
        _check_params(num_layers, vocab_size, ngram, min_count, smoothing, combine)
        check_ids(input_ids, attention_mask, vocab_size)
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        N = input_ids.shape[0]
        exit_layers = exit_layers.to(input_ids.device).long()
        if exit_layers.shape != (N,):
            raise ValueError(f"exit_layers must be ({N},), got {tuple(exit_layers.shape)}")
        if N == 0:
            raise ValueError("an exit table needs at least one row")
        if exit_layers.min() < 1 or exit_layers.max() > num_layers:
            raise ValueError(f"exit layers must lie in 1..{num_layers}")

        device, L, V = input_ids.device, num_layers, vocab_size
        special = torch.tensor(sorted({int(i) for i in special_ids}), dtype=torch.long, device=device)
        layer0 = exit_layers - 1  # (N,) 0-based
        exit_counts = torch.bincount(layer0, minlength=L)  # (L,)
        unigram_counts = torch.zeros(V * L, dtype=torch.long, device=device)  # flat (V, L)
        pair_codes = torch.zeros(0, dtype=torch.long, device=device)  # sorted distinct key * L + layer
        pair_counts = torch.zeros(0, dtype=torch.long, device=device)
        if ngram == 2 and V * V * L > _MAX_CODE:
            raise ValueError(f"vocab_size {V} is too large for exact bigram keys")
        step = min(chunk_size, _MAX_CODE // (V * V if ngram == 2 else V))
        for start in range(0, N, step):
            ids = input_ids[start : start + step]  # (n, T)
            valid = valid_mask(ids, attention_mask[start : start + step], special)  # (n, T)
            lay = layer0[start : start + step]  # (n,)
            rows, keys = row_distinct(ids, valid, V)  # (M,) each
            unigram_counts.index_add_(0, keys * L + lay[rows], torch.ones_like(keys))
            if ngram == 2:
                pkeys, pvalid = pairs(ids, valid, V)  # (n, T-1)
                rows, keys = row_distinct(pkeys, pvalid, V * V)  # (M,)
                pair_codes, pair_counts = merge_codes(
                    pair_codes, pair_counts, keys * L + lay[rows], torch.ones_like(keys)
                )
        bigram_keys = bigram_counts = None
        if ngram == 2:
            bigram_keys, bigram_counts = codes_to_table(pair_codes, pair_counts, L)
        table = cls(
            exit_counts=exit_counts,
            unigram_counts=unigram_counts.view(V, L),
            bigram_keys=bigram_keys,
            bigram_counts=bigram_counts,
            num_layers=L,
            vocab_size=V,
            special_ids=special.tolist(),
            ngram=ngram,
            min_count=min_count,
            smoothing=smoothing,
            combine=combine,
        )
        logger.info("built exit table: %s", table.summary())
        return table

    # -------------------------------------------------------------------------------------------- predict

    def predict_distribution(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        *,
        combine: str | None = None,
        weighting: str = "idf",
    ) -> Tensor:
        """Each row's predicted exit distribution, from its distinct keys (see the module docstring).

        Args:
            input_ids: (B, T) int64 token ids in 0..vocab_size-1, on the table's device.
            attention_mask: (B, T); 0 marks padding.
            combine: name in :data:`COMBINERS`; None uses the table's default (``"mean"``).
            weighting: ``"idf"`` (w_k = log(N / N_k)) or ``"none"`` (every seen key weighs 1; an ablation).

        Returns:
            q: (B, L) float64, rows summing to 1.
        """
        combine = self.combine if combine is None else combine
        if combine not in COMBINERS:
            raise ValueError(f"unknown combine {combine!r}; choose one of: {', '.join(COMBINERS)}")
        if weighting not in WEIGHTINGS:
            raise ValueError(f"unknown weighting {weighting!r}; choose one of: {', '.join(WEIGHTINGS)}")
        check_ids(input_ids, attention_mask, self.vocab_size)
        valid = valid_mask(input_ids, attention_mask, self._special)  # (B, T)
        uni_positions = valid
        parts: list[tuple[Tensor, Tensor]] = []
        if self.ngram == 2:
            keys, pvalid = pairs(input_ids, valid, self.vocab_size)  # (B, T-1)
            cnt, df = self._lookup_bigrams(keys, pvalid)  # (B, T-1, L), (B, T-1)
            usable = pvalid & (df >= self.min_count)  # (B, T-1)
            covered = torch.zeros_like(valid)  # (B, T)
            covered[:, :-1] |= usable
            covered[:, 1:] |= usable
            uni_positions = valid & ~covered
            parts.append(self._key_terms(cnt, df, usable & first_occurrence(keys, usable), weighting))
        safe = torch.where(uni_positions, input_ids, torch.zeros_like(input_ids))  # (B, T)
        cnt, df = self.unigram_counts[safe], self.unigram_df[safe]  # (B, T, L), (B, T)
        use = uni_positions & first_occurrence(input_ids, uni_positions) & (df > 0)
        parts.append(self._key_terms(cnt, df, use, weighting))
        p = torch.cat([part[0] for part in parts], dim=1)  # (B, K, L)
        w = torch.cat([part[1] for part in parts], dim=1)  # (B, K)
        q, total = COMBINERS[combine](p, w)  # (B, L), (B,)
        return torch.where((total > 0).unsqueeze(-1), q, self.pi.expand_as(q))

    def predict_layers(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        tau: float,
        exit_layers: Sequence[int] | None = None,
        *,
        combine: str | None = None,
        weighting: str = "idf",
    ) -> Tensor:
        """Each row's predicted exit layer (B,) long: see :func:`layers_from_distribution`."""
        check_tau(tau)
        q = self.predict_distribution(input_ids, attention_mask, combine=combine, weighting=weighting)
        return layers_from_distribution(q, tau, exit_layers)

    def _lookup_bigrams(self, keys: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Counts (B, P, L) and document frequencies (B, P) of bigram keys; 0 where unseen or masked."""
        assert self.bigram_keys is not None and self.bigram_counts is not None and self.bigram_df is not None
        B, P, L = keys.shape[0], keys.shape[1], self.num_layers
        K = self.bigram_keys.shape[0]
        if K == 0 or P == 0:
            zeros = torch.zeros((B, P), dtype=torch.long, device=keys.device)
            return zeros.unsqueeze(-1).expand(B, P, L), zeros
        slot = torch.searchsorted(self.bigram_keys, keys).clamp(max=K - 1)  # (B, P)
        found = mask & (self.bigram_keys[slot] == keys)  # the slot holds the query itself, else unseen
        slot = torch.where(found, slot, torch.zeros_like(slot))
        cnt = self.bigram_counts[slot] * found.unsqueeze(-1)  # (B, P, L)
        return cnt, self.bigram_df[slot] * found

    def _key_terms(self, cnt: Tensor, df: Tensor, use: Tensor, weighting: str) -> tuple[Tensor, Tensor]:
        """Per-key smoothed distributions p (B, P, L) and weights w (B, P); w is 0 where ``use`` is False."""
        dff = df.double()  # (B, P)
        denom = torch.where(use, dff + self.smoothing, torch.ones_like(dff))
        p = (cnt.double() + self.smoothing * self.pi) / denom.unsqueeze(-1)  # (B, P, L)
        if weighting == "idf":
            w = torch.log(self.num_rows / dff.clamp_min(1.0))
        else:
            w = torch.ones_like(dff)
        return p, torch.where(use, w, torch.zeros_like(w))

    # ------------------------------------------------------------------------------------ save, load, info

    def tensors(self) -> dict[str, Tensor]:
        """The stored tensors by name (the derived ones, df and pi, are recomputed on load)."""
        out = {"exit_counts": self.exit_counts, "unigram_counts": self.unigram_counts}
        if self.ngram == 2:
            assert self.bigram_keys is not None and self.bigram_counts is not None
            out["bigram_keys"] = self.bigram_keys
            out["bigram_counts"] = self.bigram_counts
        return out

    def params(self) -> dict[str, Any]:
        """JSON-serialisable parameters (for the model config and the file's metadata)."""
        return {
            "ngram": self.ngram,
            "min_count": self.min_count,
            "smoothing": self.smoothing,
            "combine": self.combine,
            "num_layers": self.num_layers,
            "vocab_size": self.vocab_size,
            "num_rows": self.num_rows,
            "special_ids": list(self.special_ids),
        }

    def summary(self) -> dict[str, Any]:
        """What ``geep info`` shows: table size and the exit histogram ({layer: rows})."""
        out: dict[str, Any] = {
            "num_rows": self.num_rows,
            "num_layers": self.num_layers,
            "ngram": self.ngram,
            "unigram_keys": int((self.unigram_df > 0).sum()),
            "bigram_keys": 0,
            "usable_bigram_keys": 0,
            "exit_histogram": {k + 1: int(c) for k, c in enumerate(self.exit_counts.tolist())},
        }
        if self.bigram_df is not None:
            out["bigram_keys"] = int(self.bigram_df.shape[0])
            out["usable_bigram_keys"] = int((self.bigram_df >= self.min_count).sum())
        return out

    def save(self, path: str | Path) -> None:
        """Write one safetensors file: the tensors plus the parameters as string metadata."""
        metadata = {
            "format": FORMAT,
            "format_version": str(FORMAT_VERSION),
            "params": json.dumps(self.params(), sort_keys=True),
        }
        save_file({k: v.contiguous() for k, v in self.tensors().items()}, str(path), metadata=metadata)
        logger.debug("wrote exit table to %s", path)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device | None = None) -> "ExitTable":
        """Read a table written by :meth:`save`; strict about format, version and tensor names."""
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        if metadata.get("format") != FORMAT:
            raise ValueError(f"{path} is not a geep exit table (format {metadata.get('format')!r})")
        if metadata.get("format_version") != str(FORMAT_VERSION):
            raise ValueError(
                f"unknown exit table format_version {metadata.get('format_version')!r} in {path} "
                f"(this geep reads version {FORMAT_VERSION})"
            )
        params = json.loads(metadata["params"])
        tensors = load_file(str(path), device=str(device) if device is not None else "cpu")
        expected = {"exit_counts", "unigram_counts"}
        if params.get("ngram") == 2:
            expected |= {"bigram_keys", "bigram_counts"}
        missing, unexpected = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
        if missing or unexpected:
            raise ValueError(f"exit table {path}: missing tensors {missing}, unexpected tensors {unexpected}")
        num_rows = params.pop("num_rows")
        table = cls(
            exit_counts=tensors["exit_counts"],
            unigram_counts=tensors["unigram_counts"],
            bigram_keys=tensors.get("bigram_keys"),
            bigram_counts=tensors.get("bigram_counts"),
            **params,
        )
        if table.num_rows != num_rows:
            raise ValueError(f"exit table {path}: metadata says {num_rows} rows, histogram {table.num_rows}")
        return table

    def to(self, device: str | torch.device) -> "ExitTable":
        """A copy of the table with every tensor on ``device``."""
        moved = {k: v.to(device) for k, v in self.tensors().items()}
        params = self.params()
        params.pop("num_rows")
        return type(self)(
            exit_counts=moved["exit_counts"],
            unigram_counts=moved["unigram_counts"],
            bigram_keys=moved.get("bigram_keys"),
            bigram_counts=moved.get("bigram_counts"),
            **params,
        )

    @property
    def device(self) -> torch.device:
        return self.exit_counts.device

    def __repr__(self) -> str:
        return f"ExitTable({', '.join(f'{k}={v}' for k, v in self.params().items())})"


# --------------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------------


def _check_params(
    num_layers: int, vocab_size: int, ngram: int, min_count: int, smoothing: float, combine: str
) -> None:
    if num_layers < 1 or vocab_size < 1:
        raise ValueError(f"num_layers and vocab_size must be >= 1, got {num_layers} and {vocab_size}")
    if ngram not in (1, 2):
        raise ValueError(f"ngram must be 1 or 2, got {ngram}")
    if min_count < 1:
        raise ValueError(f"min_count must be >= 1, got {min_count}")
    if not (math.isfinite(smoothing) and smoothing >= 0):
        raise ValueError(f"smoothing must be a finite number >= 0, got {smoothing}")
    if combine not in COMBINERS:
        raise ValueError(f"unknown combine {combine!r}; choose one of: {', '.join(COMBINERS)}")
