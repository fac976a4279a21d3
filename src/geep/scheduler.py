"""Sorted buckets (the ``geep`` policy) and predict-then-verify (``geep-verify``).

GEEP predicts each row's exit layer before the model runs (``geep.exit_table``). The scheduler then sorts rows by
(predicted layer, length), cuts each layer's rows into batches of ``batch_size``, pads each batch to its own longest
row, runs it to exactly its layer and calls only that layer's head: no shrinking batches and no head calls at
layers where nobody exits.

``geep-verify`` (ours): after the head at its predicted layer, a row whose normalised entropy is still above the
build threshold S continues. Continuing rows are pooled per layer across buckets, re-sorted by length, re-padded to
their own longest row and run on layer by layer under the ``fastbert`` rule at S, from the hidden state they already
have: no layer is ever recomputed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from geep.backbone import State
from geep.engine import pad_batch

if TYPE_CHECKING:
    from geep.flops import FlopsCount
    from geep.model import MultiExitClassifier


def normalised_entropy(logits: Tensor) -> Tensor:
    """entropy(softmax(logits)) / ln C for logits (B, C) -> (B,), from log_softmax."""
    log_p = F.log_softmax(logits.float(), dim=-1)
    return -(log_p.exp() * log_p).sum(-1) / math.log(logits.shape[-1])


def bucket_order(predicted_layers: Sequence[int], lengths: Sequence[int]) -> list[int]:
    """Row indices sorted by (predicted layer, length), stable."""
    return sorted(range(len(lengths)), key=lambda i: (predicted_layers[i], lengths[i]))


@dataclass
class _Carry:
    """Rows continuing past an exit, waiting to be pooled: per-row tensors kept together."""

    hidden: list[Tensor] = field(default_factory=list)  # each (b, T_i, H)
    attention_mask: list[Tensor] = field(default_factory=list)  # each (b, T_i)
    row_ids: list[Tensor] = field(default_factory=list)  # each (b,)

    def add(self, state: State, keep: Tensor) -> None:
        self.hidden.append(state.hidden[keep])
        self.attention_mask.append(state.attention_mask[keep])
        self.row_ids.append(state.row_ids[keep])

    def batches(self, model: "MultiExitClassifier", layer: int, batch_size: int) -> list[State]:
        """The pooled rows, sorted by length and cut into batches each padded to its own longest row."""
        if not self.row_ids:
            return []
        T = max(h.shape[1] for h in self.hidden)
        hidden = torch.cat([F.pad(h, (0, 0, 0, T - h.shape[1])) for h in self.hidden])  # (P, T, H)
        mask = torch.cat([F.pad(m, (0, T - m.shape[1])) for m in self.attention_mask])  # (P, T)
        pooled = State(hidden, mask, None, torch.cat(self.row_ids), layer)
        order = torch.sort(mask.sum(1), stable=True).indices  # by length
        return [model.select_rows(pooled, order[i:i + batch_size]) for i in range(0, len(order), batch_size)]


def run_buckets(model: "MultiExitClassifier", encoded: dict[str, list[list[int]]], predicted_layers: Tensor, *,
                batch_size: int = 32, verify_threshold: float | None = None, counter: "FlopsCount | None" = None
                ) -> tuple[Tensor, Tensor]:
    """Runs every row to its predicted exit layer (and on, with ``verify_threshold``); outputs in input order.

    encoded: unpadded token ids per row (``model.tokenize``); predicted_layers (N,) with values in E.
    Returns probabilities (N, C) and exit layers (N,), on the CPU.
    """
    exits = model.exit_layers
    L, C = model.num_layers, model.config.num_labels
    n = len(encoded["input_ids"])
    predicted = predicted_layers.tolist()
    if any(p not in exits for p in predicted):
        raise ValueError(f"predicted layers must be exit layers {exits}")
    probabilities = torch.zeros((n, C))
    exit_layers = torch.zeros((n,), dtype=torch.long)
    pad_id = model.tokenizer.pad_token_id or 0
    order = bucket_order(predicted, [len(x) for x in encoded["input_ids"]])
    by_layer = {k: [i for i in order if predicted[i] == k] for k in exits}
    carry = _Carry()
    previous = 0
    for k in exits:
        states = carry.batches(model, previous, batch_size)  # rows that continued from the previous exit
        carry = _Carry()
        rows = by_layer[k]
        for start in range(0, len(rows), batch_size):  # fresh rows whose predicted exit is k
            chunk = rows[start:start + batch_size]
            batch = pad_batch(encoded, chunk, pad_id, model.device)
            states.append(model.embed(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"),
                                      row_ids=torch.tensor(chunk, device=model.device)))
        for state in states:
            if counter is not None:
                counter.add_layers(state.layer, k, state.batch_size, state.seq_len)
            state = model.run_layers(state, k)
            logits = model.exit_logits(state)  # (B, C): the only head this batch calls at k
            if counter is not None:
                counter.add_head(k, state.batch_size, state.seq_len)
            if verify_threshold is None or k == L:
                leave = torch.ones(state.batch_size, dtype=torch.bool, device=logits.device)
            else:
                leave = normalised_entropy(logits) <= verify_threshold  # (B,)
            ids = state.row_ids[leave].cpu()
            probabilities[ids] = logits[leave].float().softmax(-1).cpu()
            exit_layers[ids] = k
            if not bool(leave.all()):
                carry.add(state, ~leave)
        previous = k
    return probabilities, exit_layers
