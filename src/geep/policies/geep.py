"""``geep`` and ``geep-verify``: exit layers predicted from the tokens before the model runs.

Knob tau in [0, 1]: each row's predicted exit is the smallest layer l whose cumulative predicted probability
reaches tau (see ``geep.exit_table``). tau = 1: every row is predicted L (never exit early); tau = 0: every row is
predicted the first exit. Default 0.5, or the model's calibrated default.

- ``geep``: sorted buckets: every row exits exactly at its predicted layer, one head call per row.
- ``geep-verify``: as ``geep``, then a row whose normalised entropy at its predicted layer is above the build
  threshold S continues, pooled with the other continuing rows, under the ``fastbert`` rule at S. tau = 1 is
  still "never exit early"; at tau = 0 every row starts at the first exit and leaves where the ``fastbert`` rule
  at S first holds (FastBERT at S with full, pooled batches), so "first exit" holds only for rows that pass.

The policies only predict layers and decide who leaves; the scheduler (``geep.scheduling``) runs no head of a
row before its predicted layer and pools the rows that continue.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, NamedTuple

from torch import Tensor

from geep.errors import GeepError
from geep.exit_table import layers_from_distribution
from geep.policies.base import KnobSpec, Memory, Policy, all_leave
from geep.policies.fastbert import FastBertPolicy


class VerifyKnob(NamedTuple):
    """geep-verify's knobs: tau (predicted layers) and the fastbert threshold rows continue under."""

    tau: float
    continue_threshold: float


class GeepPolicy(Policy):
    name = "geep"
    knob_names = ("tau",)
    predicts_layers = True
    schedule = "pooled"
    verify: ClassVar[bool] = False

    def knob_spec(self, num_labels: int, num_exits: int) -> KnobSpec:
        return KnobSpec(low=0.0, high=1.0, default=0.5, never=1.0, first=0.0)

    def predict_layers(self, distribution: Tensor, knob: float, exit_layers: Sequence[int]) -> Tensor:
        """The tau-quantile of each row's exit distribution (N, L), snapped up to an exit of E: (N,)."""
        return layers_from_distribution(distribution, float(knob), exit_layers)

    def decide(self, logits: Tensor, knob: float | None, memory: Memory) -> tuple[Tensor, Memory]:
        return all_leave(logits), memory  # the scheduler reads a row's head only at its predicted layer


class GeepVerifyPolicy(GeepPolicy):
    name = "geep-verify"
    knob_names = ("tau", "continue_threshold")
    verify = True
    _rule = FastBertPolicy()

    def knob_values(self, knob: Any) -> dict[str, float]:
        if isinstance(knob, VerifyKnob):
            return {"tau": float(knob.tau), "continue_threshold": float(knob.continue_threshold)}
        return super().knob_values(knob)

    def knob_from_values(self, values: dict[str, float] | None) -> Any:
        """tau, with the stored continuation threshold when there is one (else the table's S applies)."""
        if not values:
            return None
        if "continue_threshold" in values:
            return VerifyKnob(values.get("tau"), values["continue_threshold"])
        return values.get("tau")

    def resolve_knob(self, knob: float | None, num_labels: int, num_exits: int, *,
                     build_threshold: float | None = None) -> VerifyKnob:
        """tau checked (or the default), with the exit table's build threshold S as the continuation threshold."""
        continue_threshold = None
        if isinstance(knob, VerifyKnob):
            knob, continue_threshold = knob
        tau = super().resolve_knob(knob, num_labels, num_exits)
        if continue_threshold is not None:
            t = self._rule.resolve_knob(continue_threshold, num_labels, num_exits)
            return VerifyKnob(tau, t)
        if build_threshold is None:
            raise GeepError("geep-verify continues rows under the exit table's build threshold; the model has "
                            "no exit table (`geep build-table --model DIR`)")
        return VerifyKnob(tau, float(build_threshold))

    def predict_layers(self, distribution: Tensor, knob: VerifyKnob, exit_layers: Sequence[int]) -> Tensor:
        return super().predict_layers(distribution, knob.tau, exit_layers)

    def decide(self, logits: Tensor, knob: VerifyKnob, memory: Memory) -> tuple[Tensor, Memory]:
        """At or after its predicted layer, a row leaves where the fastbert rule at the continuation threshold
        holds."""
        return self._rule.decide(logits, knob.continue_threshold, memory)
