"""Training objectives: pure loss functions of the exit logits and the labels, with declared stages.

Notation: L layers, exits E (a subset of 1..L that contains L), teacher T = the head at exit L, students
S_k for k in E, k < L.

``exit_logits`` (|E|, B, C): the logits of every exit, in the order of E, so ``exit_logits[-1]`` is T(h_L).
``diverse_logits`` (L-2, B, C): T(Layer_L(h_k)) for k = 1..L-2 ("diverse Transformer outputs"); only the
objectives whose stage says ``needs_diverse`` get them.

An objective is a list of :class:`Stage`s run in order. Each stage names the parameter groups it trains
("backbone", "teacher", "students"), which epoch count it uses, and its loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from geep.errors import GeepError

LossFn = Callable[[Tensor, "Tensor | None", Tensor, "list[int]"], Tensor]


def distillation_kl(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """sum_k KL(p_T || p_k), batch-mean, temperature 1, with p_T detached (no gradient reaches T).

    student_logits (S, B, C), teacher_logits (B, C).
    """
    p_teacher = F.softmax(teacher_logits.detach(), dim=-1)  # (B, C)
    total = student_logits.new_zeros(())
    for logits in student_logits:  # S small terms; each is KL averaged over the batch
        total = total + F.kl_div(F.log_softmax(logits, dim=-1), p_teacher, reduction="batchmean")
    return total


def per_exit_cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """The batch-mean cross entropy of each slice of the leading axis: logits (S, B, C), labels (B,) -> (S,)."""
    S, B, C = logits.shape
    per_row = F.cross_entropy(logits.reshape(S * B, C), labels.repeat(S), reduction="none")  # (S*B,)
    return per_row.view(S, B).mean(1)


def cross_entropy_sum(logits: Tensor, labels: Tensor) -> Tensor:
    """sum over the leading axis of the batch-mean cross entropy; logits (S, B, C), labels (B,)."""
    if logits.shape[0] == 0:
        return logits.new_zeros(())
    return per_exit_cross_entropy(logits, labels).sum()


def geep_loss(exit_logits: Tensor, diverse_logits: Tensor | None, labels: Tensor, exit_layers: list[int]) -> Tensor:
    """GEEP's one-step loss.

    sum_{k=1..L-1} CE(T(Layer_L(h_k)), y) + sum_{k in E, k<L} KL(p_T || p_k); the k = L-1 term is the ordinary
    path T(h_L) (= exit_logits[-1]).
    """
    if diverse_logits is None:
        raise ValueError("the geep objective needs the diverse logits")
    teacher = exit_logits[-1]  # (B, C)
    ce = cross_entropy_sum(torch.cat([diverse_logits, teacher[None]]), labels)  # L-1 terms
    return ce + distillation_kl(exit_logits[:-1], teacher)


def teacher_loss(exit_logits: Tensor, diverse_logits: Tensor | None, labels: Tensor, exit_layers: list[int]) -> Tensor:
    """CE(T(h_L), y): ordinary fine-tuning of the backbone and the teacher."""
    return F.cross_entropy(exit_logits[-1], labels)


def student_distillation_loss(exit_logits: Tensor, diverse_logits: Tensor | None, labels: Tensor,
                              exit_layers: list[int]) -> Tensor:
    """FastBERT's second stage: sum_{k<L} KL(p_T || p_k)."""
    return distillation_kl(exit_logits[:-1], exit_logits[-1])


def student_cross_entropy_loss(exit_logits: Tensor, diverse_logits: Tensor | None, labels: Tensor,
                               exit_layers: list[int]) -> Tensor:
    """DeeBERT's second stage: sum_{k<L} CE(S_k(h_k), y)."""
    return cross_entropy_sum(exit_logits[:-1], labels)


def pabee_loss(exit_logits: Tensor, diverse_logits: Tensor | None, labels: Tensor, exit_layers: list[int]) -> Tensor:
    """PABEE: sum_k k * CE(S_k(h_k), y) / sum_k k over every exit, the teacher's included."""
    weights = torch.tensor(exit_layers, dtype=exit_logits.dtype, device=exit_logits.device)  # (|E|,)
    return (weights * per_exit_cross_entropy(exit_logits, labels)).sum() / weights.sum()


@dataclass(frozen=True)
class Stage:
    """One pass of training: which parameter groups learn, for how many epochs, under which loss."""

    name: str
    loss: LossFn
    trains: tuple[str, ...]  # subset of ("backbone", "teacher", "students")
    epochs: str = "epochs"  # "epochs" or "distil_epochs": which CLI count this stage uses
    needs_diverse: bool = False


@dataclass(frozen=True)
class Objective:
    name: str
    stages: tuple[Stage, ...]
    description: str


_FINE_TUNE = Stage("fine-tune", teacher_loss, trains=("backbone", "teacher"))

OBJECTIVES: dict[str, Objective] = {
    "geep": Objective(
        "geep",
        (Stage("geep", geep_loss, trains=("backbone", "teacher", "students"), needs_diverse=True),),
        "one step: CE of the teacher on every layer's output through Layer_L + KL distillation of the students",
    ),
    "fastbert": Objective(
        "fastbert",
        (_FINE_TUNE, Stage("distil", student_distillation_loss, trains=("students",), epochs="distil_epochs")),
        "fine-tune backbone + teacher, then distil the students from the frozen teacher",
    ),
    "deebert": Objective(
        "deebert",
        (_FINE_TUNE, Stage("exits", student_cross_entropy_loss, trains=("students",), epochs="distil_epochs")),
        "fine-tune backbone + teacher, then train each frozen exit by cross entropy",
    ),
    "pabee": Objective(
        "pabee",
        (Stage("pabee", pabee_loss, trains=("backbone", "teacher", "students")),),
        "one step: cross entropy at every exit weighted by its depth",
    ),
}


def get_objective(name: str) -> Objective:
    """The objective registered under ``name``."""
    if name not in OBJECTIVES:
        raise GeepError(f"unknown objective {name!r}; choose one of: {', '.join(OBJECTIVES)}")
    return OBJECTIVES[name]
