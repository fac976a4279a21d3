"""What a task is: how its labels are read and encoded, what an exit head outputs, its losses, a row's answer, its
metrics.

A :class:`Task` is bound to a model's labels (and, for regression, the target's scale): ``get_task(name)`` gives its
class, and ``GeepConfig.make_task()`` the bound instance a model uses. Every surface reads the task from the model's
config; nothing above this layer knows how a task's head is trained or how its answer is written.

Shapes: an exit's outputs are ``(B, K)`` with K = :attr:`Task.num_outputs` (C classes, C labels, or 1 score);
training passes every exit's as ``(S, B, K)``. A model with an exit module (``geep.modeling.heads.LearnedExit``) adds
its signal as a trailing column after the task's K (``geep.tasks.layout``); a task only ever reads its own K.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor

from geep.errors import GeepError

MAX_NAMED = 5  # how many offending labels an error message names


class Answers(NamedTuple):
    """What rows answer, F of them.

    ``probabilities``: (F, C) fp32: the softmax (classification) or each label's sigmoid (multi-label); (F, 0) for
    regression. ``predictions``: class ids (F,) long; label sets (F, C) bool; scores (F,) float.
    """

    probabilities: Tensor
    predictions: Tensor


@dataclass(frozen=True)
class Task:
    """A task bound to its label names (empty for regression) and the training target's mean and standard
    deviation (regression; 0 and 1 elsewhere). Subclasses set the class variables and implement the methods."""

    label_names: tuple[str, ...] = ()
    target_mean: float = 0.0
    target_std: float = 1.0

    name: ClassVar[str]
    primary: ClassVar[str]  # the metric calibration budgets and the bench's frontier use; larger is better
    metric_names: ClassVar[tuple[str, ...]]  # every metric :meth:`metrics` reports, the primary first
    prediction_fields: ClassVar[tuple[str, ...]]  # the fields of a written prediction row, after its id
    # The exit rule geep's exit table is built with and geep-verify continues rows under (a policy name).
    verify_rule: ClassVar[str]

    def __post_init__(self) -> None:
        object.__setattr__(self, "label_names", tuple(self.label_names))

    # -------------------------------------------------------------------------------------------- structure
    @property
    def num_outputs(self) -> int:
        """K: the columns an exit head outputs for this task."""
        return len(self.label_names)

    @classmethod
    def check_label_names(cls, names: Sequence[str]) -> None:
        """GeepError (one line) when ``names`` cannot be this task's label names."""

    # --------------------------------------------------------------------------------------------- labels
    def read_labels(self, values: Sequence[Any], source: str) -> list:
        """A label column's values as this task's labels (a name; a list of names; a float); GeepError naming the
        first row that is not one. ``source`` names the data in messages."""
        raise NotImplementedError

    @classmethod
    def vocabulary(cls, labels: Sequence) -> list[str]:
        """The label names training labels define (sorted; index i is output i); empty for regression."""
        raise NotImplementedError

    def targets(self, labels: Sequence | Tensor, source: str = "labels") -> Tensor:
        """Labels (as :meth:`read_labels` gives them, or already a tensor) as the targets metrics compare answers
        with: class ids (N,) long; multi-hot (N, C) float; scores (N,) float."""
        raise NotImplementedError

    def train_targets(self, targets: Tensor) -> Tensor:
        """What the head is trained on for ``targets`` (regression: the standardised score); the same elsewhere."""
        return targets

    def strata(self, labels: Sequence) -> list:
        """A hashable key per row that seeded splits keep in proportion (``geep.data.splits``)."""
        return list(labels)

    # --------------------------------------------------------------------------------------------- losses
    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """The batch-mean loss of one exit: outputs (B, K), train targets -> ()."""
        raise NotImplementedError

    def per_exit_loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """The batch-mean loss of each exit: outputs (S, B, K), train targets -> (S,)."""
        raise NotImplementedError

    def distillation(self, student: Tensor, teacher: Tensor, temperature: float = 1.0) -> Tensor:
        """The sum over the S students of their batch-mean distance to the teacher (detached, so no gradient reaches
        it): student (S, B, K), teacher (B, K) -> ()."""
        raise NotImplementedError

    def exit_is_right(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """How right each exit already is, in [0, 1], the target a learned exit module is trained on (BERxiT):
        outputs (S, B, K), train targets -> (S, B)."""
        raise NotImplementedError

    # -------------------------------------------------------------------------------------------- answers
    def answer(self, outputs: Tensor) -> Answers:
        """What rows leaving with ``outputs`` (F, K) answer (:class:`Answers`), in fp32."""
        raise NotImplementedError

    def written(self, predictions: Tensor, probabilities: Tensor) -> list[Any]:
        """Each row's prediction as written (a label name; a list of label names; a float score)."""
        raise NotImplementedError

    def row(self, prediction: Any, probabilities: Sequence[float]) -> dict[str, Any]:
        """The fields :data:`prediction_fields` of one written row (its exit layer is added by the caller)."""
        raise NotImplementedError

    # -------------------------------------------------------------------------------------------- metrics
    def metrics(self, predictions: Tensor, targets: Tensor) -> dict[str, float]:
        """Every metric of :data:`metric_names` of ``predictions`` (``Answers.predictions``) against ``targets``
        (:meth:`targets`), each larger-is-better, from a well-kept library."""
        raise NotImplementedError

    def score(self, predictions: Tensor, targets: Tensor) -> float:
        """The primary metric alone."""
        return self.metrics(predictions, targets)[self.primary]


def finite(value: float) -> float:
    """``value``, or 0.0 where a metric is undefined (a Pearson correlation of a constant prediction is NaN: it
    predicts no ranking, so it scores as no correlation)."""
    return float(value) if math.isfinite(value) else 0.0


def named(values: Sequence[Any]) -> str:
    """At most :data:`MAX_NAMED` values for an error message, and how many more there are."""
    values = list(values)
    text = ", ".join(repr(v) for v in values[:MAX_NAMED])
    return text + (f" (and {len(values) - MAX_NAMED} more)" if len(values) > MAX_NAMED else "")


def detached(teacher: Tensor, temperature: float) -> Tensor:
    """The teacher's outputs with no gradient, checked temperature."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return teacher.detach()


def as_tensor(values: Any, dtype: torch.dtype) -> Tensor:
    return values.to(dtype) if isinstance(values, Tensor) else torch.as_tensor(values, dtype=dtype)


@dataclass(frozen=True)
class OutputLayout:
    """How an exit's output vector (B, K + S) is laid out, for the policies that read it: the task's K outputs first,
    then S signals of the model's exit module (a learned exit's logit). ``outputs`` None: every column is the
    task's (a classification model without an exit module: what a policy sees when no layout was bound)."""

    task: str = "classification"
    outputs: int | None = None
    signals: int = 0
    exits: int | None = None  # |E|: for rules whose window or total follows the model's depth (elbert, vote)
    distances: int = 0  # C class-means distances (geep fit-means), counted in ``signals``, before the trust ones
    classes: int = 0  # a token task's C: its K columns are M positions of C tag logits and a real-token flag
    trust: int = 0  # C trust-score distances (geep fit-means), the last columns, counted in ``signals``

    def token_outputs(self, logits: Tensor) -> tuple[Tensor, Tensor]:
        """A token task's outputs (B, K + S) as tag logits (B, M, C) and the real-token flag (B, M) bool
        (``geep.tasks.token_classification``)."""
        if not self.classes or self.outputs is None:
            raise ValueError("these exits carry no per-token outputs")
        width = self.classes + 1
        shaped = logits[..., : self.outputs].reshape(*logits.shape[:-1], self.outputs // width, width)
        return shaped[..., :-1], shaped[..., -1] > 0.5

    def class_distances(self, logits: Tensor) -> Tensor:
        """The class-means distances (B, C) of an exit's outputs; ValueError when the model has none fitted."""
        if not self.distances:
            raise ValueError("this model's exits carry no class-means distances")
        end = logits.shape[-1] - self.trust
        return logits[..., end - self.distances: end]

    def trust_distances(self, logits: Tensor) -> Tensor:
        """Each row's distance (B, C) to each class's trust-score set; ValueError when the model has none fitted."""
        if not self.trust:
            raise ValueError("this model's exits carry no trust-score distances")
        return logits[..., logits.shape[-1] - self.trust:]

    def task_outputs(self, logits: Tensor) -> Tensor:
        """The task's columns (B, K) of an exit's outputs (B, K + S)."""
        return logits if self.outputs is None or not self.signals else logits[..., : self.outputs]

    def signal(self, logits: Tensor, i: int = 0) -> Tensor:
        """Signal ``i`` (B,) of an exit's outputs; ValueError when the model has none."""
        if i >= self.signals or self.outputs is None:
            raise ValueError("this model's exits carry no exit-module signal")
        return logits[..., self.outputs + i]
