"""``margin`` (multi-label): exit at k when every label's probability is at least t away from the 0.5 that decides
whether it is in the row's set, |sigmoid(z_c) - 0.5| >= t for every label c; t in [0, 0.5].

The multi-label counterpart of a confidence rule: a row leaves once no label is near its decision boundary. t = 0.5:
never exit early (a probability exactly 0 or 1 would be needed, so this end is explicit); t = 0: every row exits at
the first exit. Default 0.4 (every label's probability below 0.1 or above 0.9).
"""

from __future__ import annotations

import torch
from torch import Tensor

from geep.policies.base import KnobSpec, Memory, Policy, all_leave, none_leave


class MarginPolicy(Policy):
    name = "margin"
    knob_names = ("threshold",)
    tasks = ("multi-label",)
    reads = "each label's sigmoid"

    def knob_spec(self, num_labels: int, num_exits: int) -> KnobSpec:
        return KnobSpec(low=0.0, high=0.5, default=0.4, never=0.5, first=0.0)

    def decide(self, logits: Tensor, knob: float | None, memory: Memory) -> tuple[Tensor, Memory]:
        if knob >= 0.5:
            return none_leave(logits), memory
        if knob <= 0.0:
            return all_leave(logits), memory
        p = torch.sigmoid(self.layout.task_outputs(logits).float())  # (B, C)
        return ((p - 0.5).abs() >= knob).all(-1), memory
