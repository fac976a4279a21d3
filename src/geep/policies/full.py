"""``full``: every row runs every layer and reads the teacher; no knob. The reference every speed-up is against."""

from __future__ import annotations

from torch import Tensor

from geep.policies.base import ALL_TASKS, Memory, Policy, none_leave


class FullPolicy(Policy):
    name = "full"
    reads_exits = False  # only the teacher's head runs
    tasks = (*ALL_TASKS, "token-classification")
    reads = "nothing"

    def decide(self, logits: Tensor, knob: float | None, memory: Memory) -> tuple[Tensor, Memory]:
        return none_leave(logits), memory
