"""``lte`` (BERxiT's learning to exit, Xin et al., EACL 2021): exit at k when the learned exit module's
certainty u_k = sigmoid(c^T h_k + b), its prediction of how likely exit k is already right (for regression: how close
it is), reaches t; t in [0, 1]. Every task; the model needs the module (``geep train --exit-module lte``), whose
signal trails each exit's outputs.

t = 1: never exit early (a saturated sigmoid can give exactly 1.0, so this end is explicit); t = 0: every row exits
at the first exit. Default 0.5.
"""

from __future__ import annotations

import torch
from torch import Tensor

from geep.policies.base import ALL_TASKS, KnobSpec, Memory, Policy, all_leave, none_leave


class LearnedExitPolicy(Policy):
    name = "lte"
    knob_names = ("threshold",)
    tasks = ALL_TASKS
    reads = "a learned exit's certainty"
    needs_signal = True
    exit_module = "lte"

    def knob_spec(self, num_labels: int, num_exits: int) -> KnobSpec:
        return KnobSpec(low=0.0, high=1.0, default=0.5, never=1.0, first=0.0)

    def decide(self, logits: Tensor, knob: float | None, memory: Memory) -> tuple[Tensor, Memory]:
        if knob >= 1.0:
            return none_leave(logits), memory
        if knob <= 0.0:
            return all_leave(logits), memory
        return torch.sigmoid(self.layout.signal(logits).float()) >= knob, memory  # (B,)
