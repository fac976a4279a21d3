"""``deebert``: exit at k when H(p_k) <= t (natural log), t in [0, ln C].

t = 0: never exit early; t = ln C: every row exits at the first exit (a value within 1e-6 of ln C counts as ln C,
so a rounded ln C typed by hand works). Default 0.3 ln C, the level of fastbert's default. Both ends are
implemented as such, not left to the comparison. Entropy comes from ``log_softmax``.
"""

from __future__ import annotations

import math

from torch import Tensor

from geep.policies.base import KnobSpec, Memory, Policy, all_leave, entropy, none_leave


class DeeBertPolicy(Policy):
    name = "deebert"
    knob_names = ("threshold",)

    def knob_spec(self, num_labels: int, num_exits: int) -> KnobSpec:
        top = math.log(num_labels)
        return KnobSpec(low=0.0, high=top, default=0.3 * top, never=0.0, first=top)

    def decide(self, logits: Tensor, knob: float | None, memory: Memory) -> tuple[Tensor, Memory]:
        if knob <= 0.0:
            return none_leave(logits), memory
        logits = self.layout.task_outputs(logits)  # (B, C)
        if knob >= math.log(logits.shape[-1]):
            return all_leave(logits), memory
        return entropy(logits) <= knob, memory

    def confidence_at(self, layer: int, logits: Tensor, knob=None) -> Tensor:
        return -entropy(logits)  # (B,)
