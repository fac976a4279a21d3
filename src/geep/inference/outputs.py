"""What inference returns: per-row results in input order."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from torch import Tensor

from geep.runtime.flops import FlopsCount


@dataclass
class PredictionOutput:
    """What :func:`geep.predict` returns, one entry per input row in input order.

    labels: label names; label_ids (N,); probabilities (N, C) of the exit each row left at; exit_layer (N,): the
    layer each row left at, in 1..L (``exit_layers`` is always E, the set of exits of a model).
    """

    labels: list[str]
    label_ids: Tensor
    probabilities: Tensor
    exit_layer: Tensor

    def __len__(self) -> int:
        return len(self.labels)


class PolicyRun(NamedTuple):
    """probabilities (N, C) and exit_layer (N,) on the CPU in input order; flops: the count of what ran."""

    probabilities: Tensor
    exit_layer: Tensor
    flops: FlopsCount


class ExitLogits(NamedTuple):
    """logits (N, |E|, C) of every exit in the order of E, and token lengths (N,), both in input order."""

    logits: Tensor
    lengths: Tensor
