"""Offline runs: every row added at time 0, the executor run until the scheduler is empty, results in input order."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from geep.inference.executor import Executor, Finished
from geep.policies import Policy
from geep.runtime.base import Backend
from geep.runtime.flops import FlopsCount
from geep.scheduling import Row, Scheduler, Step, get_strategy
from geep.tokens import Encoded, token_lengths

CHUNK_ROWS = 8192  # rows a pooled schedule takes at once: bounds the memory of rows waiting between exits


class _Outputs:
    """Probabilities (N, C) and each row's exit layer (N,) filled by row id, kept on the backend's device until the end."""

    def __init__(self, n: int, num_labels: int, device: torch.device) -> None:
        self.probabilities = torch.zeros((n, num_labels), device=device)
        self.exit_layer = torch.zeros((n,), dtype=torch.long, device=device)

    def record(self, finished: Finished) -> None:
        ids = torch.tensor([row.id for row in finished.rows], dtype=torch.long, device=self.exit_layer.device)
        self.probabilities[ids] = finished.logits.float().softmax(-1)
        self.exit_layer[ids] = finished.layer


def make_rows(encoded: Encoded, order: Sequence[int], predicted: Sequence[int] | None = None) -> list[Row]:
    """Rows for the scheduler in ``order``, each keyed by its position in it; ids are input indices."""
    types = encoded.get("token_type_ids")
    return [Row(i, encoded["input_ids"][i], None if types is None else types[i],
                predicted=None if predicted is None else int(predicted[i]), key=position)
            for position, i in enumerate(order)]


def length_order(lengths: Sequence[int]) -> list[int]:
    """Row indices sorted by length (stable, so equal lengths keep input order)."""
    return sorted(range(len(lengths)), key=lambda i: lengths[i])


def run_rows(backend: Backend, policy: Policy, knob: Any, encoded: Encoded, *, batch_size: int,
             schedule: str | None = None, order: Sequence[int] | None = None, predicted: Sequence[int] | None = None,
             labels: Tensor | None = None, flops: FlopsCount | None = None,
             on_head: Callable[[Step, Tensor, Tensor], None] | None = None,
             on_finished: Callable[[int], None] | None = None) -> tuple[Tensor, Tensor]:
    """Runs every row of ``encoded`` under ``policy`` at ``knob``, offline: every row is added at time 0.

    ``schedule`` (default: the policy's): ``shrink`` adds every row at once, in ``order`` (default: by length);
    ``pooled`` adds them ``CHUNK_ROWS`` at a time in ``order`` (default: input order), each chunk run to the end
    before the next. ``predicted`` (N,): predicted exit layers, for policies that predict them. Returns
    probabilities (N, C) and exit layers (N,) in input order, on the backend's device.
    """
    schedule = schedule or policy.schedule
    n = len(encoded["input_ids"])
    if order is None:
        order = length_order(token_lengths(encoded)) if schedule == "shrink" else range(n)
    order = list(order)
    outputs = _Outputs(n, backend.num_labels, backend.device)
    chunk = n if schedule == "shrink" else CHUNK_ROWS
    rows = make_rows(encoded, order, predicted)
    for start in range(0, n, max(chunk, 1)):
        scheduler = Scheduler(backend.exit_layers, backend.num_layers, get_strategy(schedule),
                              batch_size=batch_size, reads_exits=policy.reads_exits)
        scheduler.add(rows[start:start + chunk])
        executor = Executor(scheduler, backend, policy, knob, labels=labels, flops=flops, on_head=on_head)
        for finished in executor.run():
            if finished.rows:
                outputs.record(finished)
                if on_finished is not None:
                    on_finished(len(finished.rows))
    return outputs.probabilities, outputs.exit_layer
