"""What inference returns: per-row results in input order."""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Sequence
from typing import Any, NamedTuple

from torch import Tensor

from geep.runtime.flops import FlopsCount


# The fields of a written prediction row (:meth:`PredictionOutput.rows`), after its id when there is one.
PREDICTION_FIELDS = ("prediction", "probability", "probabilities", "exit_layer")


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
    # a cascade's: the member (1..M) each row left in; exit_layer then counts every layer the row ran through, its
    # earlier members' included (geep.modeling.cascade). None for a model.
    exit_member: Tensor | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def rows(self, label_names: Sequence[str], ids: Sequence | None = None) -> list[dict[str, Any]]:
        """One dict per row, as `geep predict` writes them: id (when ``ids`` are given), prediction, probability,
        probabilities {label: p} (``label_names``: the model's, in label-id order), exit_layer, and a cascade's
        exit_member."""
        probs = self.probabilities.tolist()
        members = None if self.exit_member is None else self.exit_member.tolist()
        rows = []
        for i, (name, label_id, layer) in enumerate(zip(self.labels, self.label_ids.tolist(),
                                                        self.exit_layer.tolist())):
            row: dict[str, Any] = {} if ids is None else {"id": ids[i]}
            row.update(prediction=name, probability=probs[i][label_id],
                       probabilities=dict(zip(label_names, probs[i])), exit_layer=layer)
            if members is not None:
                row["exit_member"] = members[i]
            rows.append(row)
        return rows


class PolicyRun(NamedTuple):
    """probabilities (N, C) and exit_layer (N,) on the CPU in input order; flops: the count of what ran;
    label_ids (N,): each row's answer (``geep.inference.rows.answers``)."""

    probabilities: Tensor
    exit_layer: Tensor
    flops: FlopsCount
    label_ids: Tensor


class ExitLogits(NamedTuple):
    """logits (N, |E|, C) of every exit in the order of E, and token lengths (N,), both in input order."""

    logits: Tensor
    lengths: Tensor
