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

import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from geep.backbone import State
from geep.engine import Outputs, PolicyRun, progress_bar, advance, batches, embed_rows, read_exit
from geep.flops import FlopsCount, FlopsSpec
from geep.policies import get_policy

if TYPE_CHECKING:
    from geep.model import MultiExitClassifier


CHUNK_ROWS = 8192  # rows scheduled together: bounds the memory of buckets and pooled continuing rows


def bucket_order(predicted_layers: Sequence[int], lengths: Sequence[int], rows: Sequence[int] | None = None
                 ) -> list[int]:
    """``rows`` (default all, in order) sorted by (predicted layer, length); ties keep the order of ``rows``."""
    rows = range(len(lengths)) if rows is None else rows
    return sorted(rows, key=lambda i: (predicted_layers[i], lengths[i]))


def chunks(order: Sequence[int], size: int = CHUNK_ROWS) -> list[Sequence[int]]:
    """The rows in ``order`` cut into chunks scheduled one after another."""
    return [order[i:i + size] for i in range(0, len(order), size)]


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


def run_buckets(model: "MultiExitClassifier", encoded: dict, predicted_layers: Tensor, *, batch_size: int = 32,
                verify_threshold: float | None = None, counter: FlopsCount | None = None,
                order: Sequence[int] | None = None, show_progress: bool = False) -> tuple[Tensor, Tensor]:
    """Runs every row to its predicted exit layer (and on, with ``verify_threshold``); outputs in input order.

    encoded: unpadded token ids per row (``model.tokenize``); predicted_layers (N,) with values in E. ``order``
    (default: input order) only breaks ties between rows of equal predicted layer and length, and decides which
    rows are scheduled together when there are more than CHUNK_ROWS. Returns probabilities (N, C) and exit
    layers (N,), on the CPU.
    """
    exits = model.exit_layers
    n = len(encoded["input_ids"])
    predicted = predicted_layers.tolist()
    if any(p not in exits for p in predicted):
        raise ValueError(f"predicted layers must be exit layers {exits}")
    outputs = Outputs(n, model.config.num_labels, model.device)
    lengths = [len(x) for x in encoded["input_ids"]]
    bar = progress_bar(n, show_progress)
    try:
        for rows in chunks(list(range(n)) if order is None else list(order)):
            _run_chunk(model, encoded, bucket_order(predicted, lengths, rows), predicted, batch_size,
                       verify_threshold, counter, outputs, bar)
    finally:
        bar.close()
    return outputs.probabilities.cpu(), outputs.exit_layers.cpu()


def _run_chunk(model, encoded, order, predicted, batch_size, verify_threshold, counter, outputs, bar) -> None:
    """Buckets of one chunk of rows (already in bucket order), layer by layer, with pooled continuation."""
    exits, L = model.exit_layers, model.num_layers
    rule = get_policy("fastbert")
    carry, previous = _Carry(), 0
    for k in exits:
        pooled = carry.batches(model, previous, batch_size)  # rows that continued from the previous exit
        fresh = (embed_rows(model, encoded, rows)  # embedded one batch at a time, as it runs
                 for rows in batches([i for i in order if predicted[i] == k], batch_size))
        carry = _Carry()
        for state in itertools.chain(pooled, fresh):
            state = advance(model, state, k, counter)
            logits = read_exit(model, state, counter)  # (B, C): the only head this batch calls at k
            if verify_threshold is None or k == L:
                leave = torch.ones(state.batch_size, dtype=torch.bool, device=logits.device)
            else:
                leave, _ = rule.decide(logits, verify_threshold, {})  # (B,)
            outputs.record(state.row_ids[leave], logits[leave], k)
            bar.update(int(leave.sum()))
            if not bool(leave.all()):
                carry.add(state, ~leave)
        previous = k


def run_geep(model: "MultiExitClassifier", encoded: dict, tau: float, *, batch_size: int = 32,
             verify: bool = False, order: Sequence[int] | None = None, show_progress: bool = False) -> PolicyRun:
    """The ``geep`` (or ``geep-verify``) policy over tokenised rows: predict, sort, run the buckets."""
    from geep.exit_prediction import exit_distribution, predicted_layers, verify_threshold

    model.eval()
    with torch.inference_mode():
        predicted = predicted_layers(model, exit_distribution(model, encoded), tau)  # (N,): the model has not run
        counter = FlopsCount(FlopsSpec.from_model(model))
        probabilities, exit_layers = run_buckets(
            model, encoded, predicted, batch_size=batch_size, counter=counter, order=order,
            show_progress=show_progress,
            verify_threshold=verify_threshold(model) if verify else None)
    return PolicyRun(probabilities, exit_layers, counter)


def replay_bucket_flops(spec: FlopsSpec, lengths: Sequence[int], predicted_layers: Sequence[int],
                        exit_layers: Sequence[int], batch_size: int) -> FlopsCount:
    """The count :func:`run_buckets` makes, from row lengths, predicted and actual exit layers, without a model.

    Rows are in input order. Under plain ``geep`` every exit layer equals the predicted one; a row whose exit
    is later continued (``geep-verify``) and is pooled exactly as :func:`run_buckets` pools it.
    """
    count = FlopsCount(spec)
    for rows in chunks(list(range(len(lengths)))):
        _replay_chunk(spec, lengths, bucket_order(predicted_layers, lengths, rows), predicted_layers, exit_layers,
                      batch_size, count)
    return count


def _replay_chunk(spec, lengths, order, predicted_layers, exit_layers, batch_size, count) -> None:
    exits = sorted(spec.heads)
    carry: list[int] = []  # rows continuing from the previous exit, in the order run_buckets adds them
    previous = 0
    for k in exits:
        pooled = sorted(carry, key=lambda i: lengths[i])  # stable, like the run's torch.sort
        fresh = [i for i in order if predicted_layers[i] == k]
        work = [(previous, rows) for rows in batches(pooled, batch_size)] + [(0, rows) for rows in batches(fresh, batch_size)]
        carry = []
        for start, rows in work:
            T = max(lengths[i] for i in rows)
            count.add_layers(start, k, len(rows), T)
            count.add_head(k, len(rows), T)
            carry += [i for i in rows if exit_layers[i] > k]
        previous = k
