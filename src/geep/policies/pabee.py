"""``pabee`` (patience): exit at k when the predicted label has not changed for p consecutive exits, i.e. the
exits up to and including k give p + 1 equal predictions in a row; p an integer in [0, |E| - 1].

p = |E| - 1: never exit early (p + 1 = |E| agreeing exits can only end at L); p = 0: every row exits at the first
exit. PABEE's own patience starts at 1; 0 is kept as the exact "first exit" end. Default |E| // 2 (PABEE's 6 of
12 on BERT-base). Per-row memory: the previous exit's label and the current run of agreements, indexed with the
rows when rows leave.
"""

from __future__ import annotations

import torch
from torch import Tensor

from geep.policies.base import KnobSpec, Memory, Policy


class PatiencePolicy(Policy):
    name = "pabee"
    knob_names = ("patience",)

    def knob_spec(self, num_labels: int, num_exits: int) -> KnobSpec:
        top = num_exits - 1
        return KnobSpec(low=0, high=top, default=num_exits // 2, never=top, first=0, integer=True)

    def start(self, batch_size: int, device: torch.device, labels: Tensor | None = None) -> Memory:
        return {
            "previous": torch.full((batch_size,), -1, dtype=torch.long, device=device),  # no label yet
            "agreed": torch.zeros((batch_size,), dtype=torch.long, device=device),
        }

    def decide(self, logits: Tensor, knob: float | None, memory: Memory) -> tuple[Tensor, Memory]:
        label = logits.argmax(-1)  # (B,)
        agreed = torch.where(label == memory["previous"], memory["agreed"] + 1, 0)
        return agreed >= int(knob), {"previous": label, "agreed": agreed}
