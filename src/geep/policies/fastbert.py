"""``fastbert`` (FastBERT's "speed"): exit at k when H(p_k) / ln C <= t, t in [0, 1].

t = 0: never exit early; t = 1: every row exits at the first exit. Default 0.3. Both ends are implemented as
such: a one-hot softmax can have entropy exactly 0 and a uniform one a normalised entropy a rounding error above
1, so neither end is left to the comparison. Entropy comes from ``log_softmax`` (:func:`geep.policies.base.entropy`).
"""

from __future__ import annotations

import math

from torch import Tensor

from geep.policies.base import KnobSpec, Memory, Policy, all_leave, entropy, none_leave


class FastBertPolicy(Policy):
    name = "fastbert"
    knob_names = ("threshold",)

    def knob_spec(self, num_labels: int, num_exits: int) -> KnobSpec:
        return KnobSpec(low=0.0, high=1.0, default=0.3, never=0.0, first=1.0)

    def decide(self, logits: Tensor, knob: float | None, memory: Memory) -> tuple[Tensor, Memory]:
        if knob <= 0.0:
            return none_leave(logits), memory
        if knob >= 1.0:
            return all_leave(logits), memory
        logits = self.layout.task_outputs(logits)  # (B, C)
        return entropy(logits) / math.log(logits.shape[-1]) <= knob, memory

    def confidence_at(self, layer: int, logits: Tensor, knob=None) -> Tensor:
        return -entropy(logits) / math.log(logits.shape[-1])  # (B,)
