"""``geep`` and ``geep-verify``: exit layers predicted from the tokens before the model runs.

Knob tau in [0, 1]: each row's predicted exit is the smallest layer l whose cumulative predicted probability
reaches tau (see ``geep.exit_table``). tau = 1: every row is predicted L (never exit early); tau = 0: every row is
predicted the first exit. Default 0.5, or the model's calibrated default.

- ``geep``: sorted buckets: every row exits exactly at its predicted layer, one head call per row.
- ``geep-verify``: knob (tau, t), a :class:`VerifyKnob`. As ``geep`` at tau, then a row whose normalised entropy at
  its predicted layer is above the continuation threshold t continues, pooled with the other continuing rows, under
  the ``fastbert`` rule at t. That is classification; every task continues rows under its own exit rule
  (``Task.verify_rule``: ``margin`` for multi-label, ``pabee``'s score patience for regression), the rule its exit
  table was built with. t defaults to the exit table's build threshold S (models calibrated before t was a knob
  store tau alone and run at t = S). tau = 1 is still "never exit early"; at tau = 0 every row starts at the first
  exit and leaves where the ``fastbert`` rule at t first holds: exactly ``fastbert``'s exits at t (with pooled
  batches), so geep-verify's frontier contains FastBERT's, and tau > 0 only lets rows predicted deep skip the heads
  before their layer.

The policies only predict layers and decide who leaves; the scheduler (``geep.scheduling``) runs no head of a
row before its predicted layer and pools the rows that continue.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, NamedTuple

from torch import Tensor

import torch

from geep.errors import GeepError
from geep.exit_table import layers_from_distribution
from geep.policies.base import ALL_TASKS, KnobSpec, Memory, Policy, all_leave
from geep.policies.fastbert import FastBertPolicy
from geep.policies.margin import MarginPolicy
from geep.policies.pabee import PatiencePolicy
from geep.tasks import OutputLayout, get_task

# The exit rules a task's table is built with and geep-verify continues rows under (``Task.verify_rule``).
RULES: dict[str, type[Policy]] = {"fastbert": FastBertPolicy, "margin": MarginPolicy, "pabee": PatiencePolicy}

# tau values in geep-verify's grid (both ends included): the pair grid is tau x fastbert's t grid, so tau is coarser.
TAU_POINTS = 11


class VerifyKnob(NamedTuple):
    """geep-verify's knobs: tau (predicted layers) and the fastbert threshold rows continue under. Either may be None
    before :meth:`GeepVerifyPolicy.resolve_knob` fills it in (tau: the default; t: the table's S)."""

    tau: float | None
    continue_threshold: float | None


class GeepPolicy(Policy):
    name = "geep"
    knob_names = ("tau",)
    predicts_layers = True
    schedule = "pooled"
    verify: ClassVar[bool] = False
    tasks = ALL_TASKS
    reads = "the token exit table"

    def knob_spec(self, num_labels: int, num_exits: int) -> KnobSpec:
        return KnobSpec(low=0.0, high=1.0, default=0.5, never=1.0, first=0.0)

    def predict_layers(self, distribution: Tensor, knob: float, exit_layers: Sequence[int]) -> Tensor:
        """The tau-quantile of each row's exit distribution (N, L), snapped up to an exit of E: (N,)."""
        return layers_from_distribution(distribution, float(knob), exit_layers)

    def decide(self, logits: Tensor, knob: float | None, memory: Memory) -> tuple[Tensor, Memory]:
        return all_leave(logits), memory  # the scheduler reads a row's head only at its predicted layer


def _pair(knob: tuple) -> VerifyKnob:
    """A (tau, t) pair as a VerifyKnob; GeepError when it is not a pair."""
    if len(knob) != 2:
        raise GeepError(f"the geep-verify knob is (tau, continue_threshold), got {knob!r}")
    return VerifyKnob(*knob)


class GeepVerifyPolicy(GeepPolicy):
    name = "geep-verify"
    knob_names = ("tau", "continue_threshold")
    verify = True
    reads = "the token exit table, then the task's exit rule"
    _rule: Policy = FastBertPolicy()

    def bind(self, layout: OutputLayout) -> "GeepVerifyPolicy":
        """Bound to the layout, continuing rows under its task's rule (bound alike)."""
        bound = super().bind(layout)
        bound._rule = RULES[get_task(layout.task).verify_rule]().bind(layout)
        return bound

    def start(self, batch_size: int, device: torch.device, labels: Tensor | None = None) -> Memory:
        return self._rule.start(batch_size, device, labels)

    def knob_values(self, knob: Any) -> dict[str, float]:
        if isinstance(knob, VerifyKnob):
            return {name: float(value) for name, value in zip(self.knob_names, knob) if value is not None}
        return super().knob_values(knob)

    def knob_from_values(self, values: Mapping[str, float] | None) -> Any:
        """tau, with the stored continuation threshold when there is one (else the table's S applies)."""
        if not values:
            return None
        if values.get("continue_threshold") is not None:
            return VerifyKnob(values.get("tau"), values["continue_threshold"])
        return values.get("tau")

    def fill_knob(self, knob: Any, stored: Mapping[str, float] | None) -> Any:
        """A number is tau; a VerifyKnob or (tau, t) pair may leave either as None. What is left out comes from
        ``stored`` (the calibrated values), else the defaults (tau 0.5, t = the table's S)."""
        if isinstance(knob, tuple):
            knob = {name: value for name, value in zip(self.knob_names, _pair(knob)) if value is not None}
        elif knob is not None and not isinstance(knob, Mapping):
            knob = {"tau": knob}
        return super().fill_knob(knob, stored)

    def grid(self, num_labels: int, num_exits: int, steps: int = 21) -> list[VerifyKnob]:
        """Pairs (tau, t): ``min(steps, TAU_POINTS)`` taus over [0, 1) times every knob of ``fastbert``'s grid of
        ``steps`` (so (0, t) is in it for every fastbert t), then (1, 0): at tau = 1 every row runs to L whatever t."""
        taus = super().grid(num_labels, num_exits, max(2, min(steps, TAU_POINTS)))
        ts = self._rule.grid(num_labels, num_exits, steps)
        return [VerifyKnob(tau, t) for tau in taus[:-1] for t in ts] + [VerifyKnob(taus[-1], 0.0)]

    def resolve_knob(self, knob: Any, num_labels: int, num_exits: int, *,
                     build_threshold: float | None = None) -> VerifyKnob:
        """(tau, t) checked: tau (or the default), t given or else the exit table's build threshold S."""
        continue_threshold = None
        if isinstance(knob, tuple):
            knob, continue_threshold = _pair(knob)
        tau = super().resolve_knob(knob, num_labels, num_exits)
        if continue_threshold is not None:
            try:
                t = self._rule.resolve_knob(continue_threshold, num_labels, num_exits)
            except GeepError:
                spec = self._rule.knob_spec(num_labels, num_exits)
                raise GeepError(f"the geep-verify continue threshold must be {spec.describe()}, "
                                f"got {continue_threshold!r}") from None
            return VerifyKnob(tau, t)
        if build_threshold is None:
            raise GeepError("geep-verify continues rows under the exit table's build threshold; the model has "
                            "no exit table (`geep build-table --model DIR`)")
        return VerifyKnob(tau, float(build_threshold))

    def predict_layers(self, distribution: Tensor, knob: VerifyKnob, exit_layers: Sequence[int]) -> Tensor:
        return super().predict_layers(distribution, knob.tau, exit_layers)

    def decide(self, logits: Tensor, knob: VerifyKnob, memory: Memory) -> tuple[Tensor, Memory]:
        """At or after its predicted layer, a row leaves where the task's rule (classification: fastbert) at the
        continuation threshold holds."""
        return self._rule.decide(logits, knob.continue_threshold, memory)
