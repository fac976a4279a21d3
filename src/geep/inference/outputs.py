"""What inference returns: per-row results in input order."""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

from geep.runtime.flops import FlopsCount
from geep.tasks import Task


# The fields of a written classification row (:meth:`PredictionOutput.rows`), after its id when there is one; each
# task writes its own (``Task.prediction_fields``, then ``exit_layer``).
PREDICTION_FIELDS = ("prediction", "probability", "probabilities", "exit_layer")


def prediction_fields(task: Task) -> tuple[str, ...]:
    """The fields of a written prediction row of ``task``, after its id: the task's, then ``exit_layer``."""
    return (*task.prediction_fields, "exit_layer")


@dataclass
class PredictionOutput:
    """What :func:`geep.predict` returns, one entry per input row in input order.

    labels: each row's prediction as written: a label name (classification), a list of label names (multi-label) or
    the score (regression); label_ids: the same as a tensor: class ids (N,), label sets (N, C) bool, or scores (N,);
    probabilities (N, C) of the exit each row left at (the softmax; each label's sigmoid; (N, 0) for regression);
    exit_layer (N,): the layer each row left at, in 1..L (``exit_layers`` is always E, the set of exits of a model);
    task: the model's task name.
    """

    labels: list
    label_ids: Tensor
    probabilities: Tensor
    exit_layer: Tensor
    task: str = "classification"
    # a cascade's: the member (1..M) each row left in; exit_layer then counts every layer the row ran through, its
    # earlier members' included (geep.modeling.cascade). None for a model.
    exit_member: Tensor | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def predictions(self) -> list:
        """Each row's prediction (the task-neutral name of :attr:`labels`)."""
        return self.labels

    @classmethod
    def empty(cls, task: Task, cascade: bool = False) -> "PredictionOutput":
        """No rows (``cascade``: with an empty ``exit_member``)."""
        answer = task.answer(torch.zeros((0, task.num_outputs)))
        empty = torch.zeros((0,), dtype=torch.long)
        return cls([], answer.predictions, answer.probabilities, empty, task.name, empty.clone() if cascade else None)

    @classmethod
    def from_run(cls, task: Task, run: "PolicyRun", exit_member: Tensor | None = None) -> "PredictionOutput":
        """The rows of a run (:class:`PolicyRun`) of a model of ``task`` (``exit_member``: a cascade's, per row)."""
        return cls(task.written(run.predictions, run.probabilities), run.predictions, run.probabilities,
                   run.exit_layer, task.name, exit_member)

    def rows(self, task: Task | Sequence[str], ids: Sequence | None = None) -> list[dict[str, Any]]:
        """One dict per row, as `geep predict` writes them: id (when ``ids`` are given), then the task's fields
        (``Task.prediction_fields``; classification: prediction, probability, probabilities {label: p}),
        exit_layer, and a cascade's exit_member. ``task``: the model's (a list of label names: a classifier's, for
        older callers)."""
        if not isinstance(task, Task):
            from geep.tasks import Classification

            task = Classification(tuple(task))
        probs = self.probabilities.tolist()
        members = None if self.exit_member is None else self.exit_member.tolist()
        rows = []
        for i, (prediction, layer) in enumerate(zip(self.labels, self.exit_layer.tolist())):
            row: dict[str, Any] = {} if ids is None else {"id": ids[i]}
            row.update(task.row(prediction, probs[i]))
            row["exit_layer"] = layer
            if members is not None:
                row["exit_member"] = members[i]
            rows.append(row)
        return rows


class PolicyRun(NamedTuple):
    """probabilities (N, C) and exit_layer (N,) on the CPU in input order; flops: the count of what ran;
    predictions: each row's answer (``geep.inference.rows.answers``: class ids (N,), label sets (N, C), scores
    (N,))."""

    probabilities: Tensor
    exit_layer: Tensor
    flops: FlopsCount
    predictions: Tensor

    @property
    def label_ids(self) -> Tensor:
        """The predictions (a classifier's class ids)."""
        return self.predictions


class ExitLogits(NamedTuple):
    """logits (N, |E|, K) of every exit in the order of E (the task's outputs, then any exit-module signal), and
    token lengths (N,), both in input order."""

    logits: Tensor
    lengths: Tensor
