"""Offline runs: every row added at time 0, the executor run until the scheduler is empty, results in input order."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from geep.inference.executor import Executor, Finished
from geep.inference.rows import Prepared, answers, build_rows
from geep.inference.spec import RunSpec
from geep.runtime.base import Backend
from geep.runtime.flops import FlopsCount
from geep.scheduling import Scheduler, Step, Strategy, get_strategy
from geep.tasks import Classification, Task
from geep.tokens import token_lengths

CHUNK_ROWS = 8192  # rows a pooled schedule takes at once: bounds the memory of rows waiting between exits


class Answered(NamedTuple):
    """Every row's answer in input order: probabilities (N, C), predictions (class ids (N,), label sets (N, C) or
    scores (N,): ``geep.inference.rows.answers``) and the exit layer it left at (N,)."""

    probabilities: Tensor
    predictions: Tensor
    exit_layer: Tensor

    @property
    def label_ids(self) -> Tensor:
        """The predictions (a classifier's class ids)."""
        return self.predictions


class _Outputs:
    """The outputs each row left with, filled by row id on the backend's device and answered at the end."""

    def __init__(self, n: int, num_outputs: int, device: torch.device) -> None:
        self.outputs = torch.zeros((n, num_outputs), device=device)
        self.exit_layer = torch.zeros((n,), dtype=torch.long, device=device)

    def record(self, finished: Finished) -> None:
        ids = torch.tensor([row.id for row in finished.rows], dtype=torch.long, device=self.exit_layer.device)
        self.outputs[ids] = finished.logits.to(self.outputs.dtype)
        self.exit_layer[ids] = finished.layer

    def answered(self, task: Task) -> Answered:
        probabilities, predictions = answers(task, self.outputs)
        return Answered(probabilities, predictions, self.exit_layer)


def make_scheduler(backend: Backend, spec: RunSpec, strategy: Strategy) -> Scheduler:
    """The scheduler of a run on ``backend``: the exits the spec's policy reads (``Policy.exits``: every exit, L
    alone for ``full``, a cascade's member boundaries under ``full``), the spec's batch size, ``strategy``. The one
    place offline runs and the server's lanes make one."""
    return Scheduler(spec.policy.exits(backend.exit_layers, backend.num_layers), backend.num_layers, strategy,
                     batch_size=spec.batch_size)


def length_order(lengths: Sequence[int]) -> list[int]:
    """Row indices sorted by length (stable, so equal lengths keep input order)."""
    return sorted(range(len(lengths)), key=lambda i: lengths[i])


def run_rows(backend: Backend, spec: RunSpec, prepared: Prepared, *, order: Sequence[int] | None = None,
             labels: Tensor | None = None, flops: FlopsCount | None = None,
             on_head: Callable[[Step, Tensor, Tensor], None] | None = None,
             on_finished: Callable[[int], None] | None = None) -> Answered:
    """Runs every prepared row under ``spec``, offline: every row is added at time 0.

    ``spec.schedule``: ``shrink`` adds every row at once, in ``order`` (default: by length); ``pooled`` adds them
    ``CHUNK_ROWS`` at a time in ``order`` (default: input order), each chunk run to the end before the next.
    ``labels`` (N,) class ids (multi-label: (N, C)) for policies that read them. Rows answer under ``spec.task``
    (a spec made without one: classification over every column). Returns probabilities, predictions and exit layers
    (N,) in input order, on the backend's device.
    """
    task = spec.task or Classification(tuple(str(c) for c in range(backend.num_outputs)))
    n = len(prepared)
    if order is None:
        order = length_order(token_lengths(prepared.encoded)) if spec.schedule == "shrink" else range(n)
    order = list(order)
    outputs = _Outputs(n, backend.num_outputs, backend.device)
    chunk = n if spec.schedule == "shrink" else CHUNK_ROWS
    rows = build_rows(prepared, order)
    for start in range(0, n, max(chunk, 1)):
        scheduler = make_scheduler(backend, spec, get_strategy(spec.schedule))
        scheduler.add(rows[start:start + chunk])
        executor = Executor(scheduler, backend, spec.policy, spec.knob, labels=labels, flops=flops, on_head=on_head)
        for finished in executor.run():
            if finished.rows:
                outputs.record(finished)
                if on_finished is not None:
                    on_finished(len(finished.rows))
    return outputs.answered(task)
