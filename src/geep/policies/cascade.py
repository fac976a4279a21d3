"""A cascade's rule (CascadeBERT: Li et al., "CascadeBERT: Accelerating Inference of Pre-trained Language Models
via Calibrated Complete Models Cascade", Findings of EMNLP 2021): models m = 1..M run in order; a row that member m
answers confidently leaves with member m's answer, the rest go on to member m + 1, from its embeddings.

A cascade runs as one model whose layers are its members' layers in sequence (``geep.modeling.cascade``): member m's
exit k is the cascade's exit ``offset_m + k``, and member m's last exit is a **boundary** b_m (m < M). This policy
wraps a member policy ``inner`` (``full``, ``fastbert``, ``deebert``, ``confidence``, ``pabee``, ``oracle``):

- at an exit inside a member, the member policy decides, as it would on that member alone;
- at boundary b_m the cascade rule decides: the row leaves when its calibrated confidence reaches the threshold
  theta_m, ``max_c softmax(z / T_m)_c >= theta_m`` (CascadeBERT's rule, Sec. 3: the maximum class probability
  against a threshold; z the member's logits at its last exit; T_m the member's temperature from temperature
  scaling, Guo et al. 2017, fitted on dev by ``geep calibrate``; 1 until then). theta_m = 1: no row leaves at b_m
  (every row goes on); theta_m = 0: every row leaves there. Both ends are implemented as such. A row that goes on
  starts the next member with a fresh policy memory (PABEE's counters count one member's exits);
- under ``oracle`` the boundary is the oracle's too (the earliest correct exit of the whole cascade).

The knob is a :class:`CascadeKnob`: the member policy's knob (applied in every member) and one threshold per
boundary. Named values, as ``config.json`` stores them: the member policy's names, then ``cascade_1`` ..
``cascade_{M-1}``. Its name: ``cascade`` with ``full`` members, ``cascade-<policy>`` otherwise, ``oracle`` for the
oracle. The policies that predict exit layers from one model's table (``geep``, ``geep-verify``) do not run in a
cascade.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from geep.errors import GeepError
from geep.policies.base import KnobSpec, Memory, Policy, all_leave, none_leave

DEFAULT_THRESHOLD = 0.9  # before calibration: leave member m when its calibrated max probability is >= 0.9
# The grid's thresholds near 1, where a fine-tuned model's maximum probabilities gather: 1 - 10^(-k/2), k = 2..8.
TAIL = tuple(1.0 - 10.0 ** (-k / 2) for k in range(2, 9))
THRESHOLD_SPEC = KnobSpec(low=0.0, high=1.0, default=DEFAULT_THRESHOLD, never=1.0, first=0.0)


class CascadeKnob(NamedTuple):
    """The member policy's knob (None for ``full``) and one threshold per member boundary (None: the default or
    the calibrated one, until resolved)."""

    inner: Any
    thresholds: tuple


def threshold_names(boundaries: int) -> tuple[str, ...]:
    """``cascade_1`` .. ``cascade_{M-1}``: the stored names of the boundary thresholds."""
    return tuple(f"cascade_{m}" for m in range(1, boundaries + 1))


def cascade_name(inner: Policy) -> str:
    """The name a cascade under ``inner`` runs, stores its knob and reports under."""
    if inner.name == "full":
        return "cascade"
    if inner.needs_labels:
        return inner.name
    return f"cascade-{inner.name}"


class CascadePolicy(Policy):
    """``inner`` inside each member, the cascade rule at ``boundaries`` (the cascade's exit of each member's last
    layer but the last member's), with ``temperatures`` T_m (one per boundary); ``member_exits``: the most exits a
    member has (the range of a knob that counts exits, PABEE's)."""

    def __init__(self, inner: Policy, boundaries: Sequence[int], temperatures: Sequence[float],
                 member_exits: int) -> None:
        if inner.predicts_layers:
            raise GeepError(f"{inner.name} predicts exit layers from one model's exit table; a cascade runs its "
                            "members' exits: use full, fastbert, deebert, confidence, pabee or oracle")
        if isinstance(inner, CascadePolicy):
            raise ValueError("a cascade policy inside a cascade policy")
        if len(temperatures) != len(boundaries):
            raise ValueError(f"{len(temperatures)} temperatures for {len(boundaries)} boundaries")
        self.inner = inner
        self.boundaries = tuple(int(b) for b in boundaries)
        self.temperatures = tuple(float(t) for t in temperatures)
        self.member_exits = int(member_exits)
        self.name = cascade_name(inner)
        self.needs_labels = inner.needs_labels
        self.schedule = inner.schedule
        self.knob_names = tuple(inner.knob_names) + threshold_names(len(self.boundaries))
        self._index = {b: i for i, b in enumerate(self.boundaries)}

    def __repr__(self) -> str:
        return f"CascadePolicy({self.inner.name}, boundaries={self.boundaries}, temperatures={self.temperatures})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CascadePolicy) and (self.inner, self.boundaries, self.temperatures) == (
            other.inner, other.boundaries, other.temperatures)

    def __hash__(self) -> int:
        return hash((self.name, self.boundaries, self.temperatures))

    # ------------------------------------------------------------------------------------------------- exits
    def exits(self, exit_layers: Sequence[int], num_layers: int) -> list[int]:
        """Every exit under a member policy that reads exits; the boundaries and L under ``full``."""
        if self.inner.reads_exits:
            return list(exit_layers)
        return sorted(set(self.boundaries) | {num_layers})

    def confidence(self, boundary: int, logits: Tensor) -> Tensor:
        """(B,) max_c softmax(z / T_m)_c at boundary ``boundary`` from its logits z (B, C), via log_softmax."""
        T = self.temperatures[self._index[boundary]]
        return F.log_softmax(logits.float() / T, dim=-1).max(-1).values.exp()

    def confidence_at(self, layer: int, logits: Tensor, knob: Any = None) -> Tensor | None:
        if layer in self._index:
            return None if self.needs_labels else self.confidence(layer, logits)
        return self.inner.confidence_at(layer, logits, None if knob is None else knob.inner)

    # ---------------------------------------------------------------------------------------------- deciding
    def start(self, batch_size: int, device: torch.device, labels: Tensor | None = None) -> Memory:
        return self.inner.start(batch_size, device, labels)

    def decide(self, logits: Tensor, knob: Any, memory: Memory) -> tuple[Tensor, Memory]:
        raise TypeError("a cascade decides at an exit: call decide_at(layer, ...)")

    def decide_at(self, layer: int, logits: Tensor, knob: CascadeKnob, memory: Memory) -> tuple[Tensor, Memory]:
        """Inside a member: the member policy. At boundary b_m: the cascade rule at theta_m; the rows that go on
        start the next member with fresh memory (every row of the step is at b_m, so all of it is replaced)."""
        i = self._index.get(layer)
        if i is None:
            return self.inner.decide_at(layer, logits, knob.inner, memory)
        if self.needs_labels:  # the oracle: the earliest correct exit, boundaries included
            leave, _ = self.inner.decide(logits, knob.inner, memory)
        else:
            theta = knob.thresholds[i]
            if theta >= 1.0:
                leave = none_leave(logits)
            elif theta <= 0.0:
                leave = all_leave(logits)
            else:
                leave = self.confidence(layer, logits) >= theta
        fresh = self.inner.start(logits.shape[0], logits.device, memory.get("labels"))
        return leave, fresh

    # ------------------------------------------------------------------------------------------------- knobs
    def knob_spec(self, num_labels: int, num_exits: int) -> KnobSpec | None:
        return None  # a composite knob: resolve_knob and grid below

    def knob_values(self, knob: Any) -> dict[str, float]:
        if not isinstance(knob, CascadeKnob):
            return {}
        values = dict(self.inner.knob_values(knob.inner))
        values.update({name: float(t) for name, t in zip(threshold_names(len(self.boundaries)), knob.thresholds)
                       if t is not None})
        return values

    def knob_from_values(self, values: Mapping[str, float] | None) -> Any:
        if not values:
            return None
        inner = self.inner.knob_from_values({k: v for k, v in values.items() if k in self.inner.knob_names})
        return CascadeKnob(inner, tuple(values.get(name) for name in threshold_names(len(self.boundaries))))

    def fill_knob(self, knob: Any, stored: Mapping[str, float] | None) -> Any:
        """None: the stored knob. Named values: each replaces its stored one (member policy names, ``cascade_m``).
        A CascadeKnob: as it is, its None parts filled from ``stored``. Anything else is the member policy's knob
        (the thresholds stay the stored ones); with ``full`` members, whose policy has no knob, a number is the
        threshold of the one boundary (a list: one per boundary)."""
        stored_knob = self.knob_from_values(stored)
        stored_thresholds = stored_knob.thresholds if stored_knob else (None,) * len(self.boundaries)
        if knob is None:
            return stored_knob
        if isinstance(knob, Mapping):
            unknown = [name for name in knob if name not in self.knob_names]
            if unknown:
                raise GeepError(f"the {self.name} policy has no knob {unknown[0]!r}; its knobs: "
                                f"{', '.join(self.knob_names)}")
            given = {name: value for name, value in knob.items() if value is not None}
            return self.knob_from_values({**(stored or {}), **given})
        if isinstance(knob, CascadeKnob):
            thresholds = tuple(t if t is not None else s for t, s in zip(knob.thresholds, stored_thresholds))
            inner = knob.inner if knob.inner is not None else (stored_knob.inner if stored_knob else None)
            return CascadeKnob(inner, thresholds)
        if self.needs_labels:
            raise GeepError(f"the {self.name} policy takes no threshold (got {knob!r})")
        if not self.inner.knob_names:  # full members: a number is the (one) boundary's threshold, a list each
            thresholds = tuple(knob) if isinstance(knob, (tuple, list)) else (knob,)
            if len(thresholds) != len(self.boundaries):
                raise GeepError(f"the {self.name} policy's knob is one threshold per member boundary "
                                f"({len(self.boundaries)}: {', '.join(threshold_names(len(self.boundaries)))}), "
                                f"got {knob!r}")
            return CascadeKnob(None, thresholds)
        inner = self.inner.fill_knob(knob, {k: v for k, v in (stored or {}).items() if k in self.inner.knob_names})
        return CascadeKnob(inner, stored_thresholds)

    def resolve_knob(self, knob: Any, num_labels: int, num_exits: int, *,
                     build_threshold: float | None = None) -> CascadeKnob:
        """The member policy's knob resolved against a member's exits, each threshold in [0, 1] (else the default
        0.9)."""
        if knob is None:
            knob = CascadeKnob(None, (None,) * len(self.boundaries))
        if not isinstance(knob, CascadeKnob):
            knob = CascadeKnob(knob, (None,) * len(self.boundaries))
        if len(knob.thresholds) != len(self.boundaries):
            raise GeepError(f"this cascade has {len(self.boundaries)} member boundaries; got "
                            f"{len(knob.thresholds)} cascade thresholds")
        inner = self.inner.resolve_knob(knob.inner, num_labels, self.member_exits)
        thresholds = []
        for m, t in enumerate(knob.thresholds, 1):
            if t is None:
                thresholds.append(THRESHOLD_SPEC.default)
                continue
            value = None if isinstance(t, bool) else _number(t)
            if value is None or not math.isfinite(value) or not 0.0 <= value <= 1.0:
                raise GeepError(f"the cascade threshold of member {m} (cascade_{m}) must be "
                                f"{THRESHOLD_SPEC.describe()}, got {t!r}")
            thresholds.append(value)
        return CascadeKnob(inner, tuple(thresholds))

    def check_stored(self, stored: Mapping[str, float] | None, num_labels: int, num_exits: int, *,
                     build_threshold: float | None = None) -> None:
        if not stored:
            return
        try:
            unknown = [name for name in stored if name not in self.knob_names]
            if unknown:
                raise GeepError(f"the {self.name} policy has no knob {unknown[0]!r}")
            self.resolve_knob(self.knob_from_values(stored), num_labels, num_exits)
        except GeepError as e:
            values = ", ".join(f"{name}={value!r}" for name, value in stored.items())
            raise GeepError(f"the {self.name} knob calibrated in cascade.json ({values}) is damaged: {e}; run "
                            "`geep calibrate` again") from None

    def grid(self, num_labels: int, num_exits: int, steps: int = 21) -> list[CascadeKnob]:
        """The member policy's grid times a threshold grid per boundary: ``steps`` thresholds over [0, 1] and the
        tail near 1 (:data:`TAIL`) for one boundary; for M - 1 > 1 boundaries about steps^(1/(M-1)) each, so the
        grid stays about as large."""
        if self.needs_labels:
            return [CascadeKnob(None, (1.0,) * len(self.boundaries))]
        n = len(self.boundaries)
        per = steps if n == 1 else max(3, round(steps ** (1.0 / n)))
        linear = [i / (per - 1) for i in range(per)]
        thresholds = sorted(set(linear) | (set(TAIL) if n == 1 else set()))
        combos: list[tuple] = [()]
        for _ in range(n):
            combos = [c + (t,) for c in combos for t in thresholds]
        inner = self.inner.grid(num_labels, self.member_exits, steps)
        return [CascadeKnob(k, c) for k in inner for c in combos]


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
