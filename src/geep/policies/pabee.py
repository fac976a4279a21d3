"""``pabee`` (patience, Zhou et al. 2020): exit at k when the prediction has not changed for p consecutive exits,
i.e. the exits up to and including k give p + 1 agreeing predictions in a row; p an integer in [0, |E| - 1].

What "agreeing" means follows the task: classification, the same argmax; multi-label, the same label set (every
sigmoid on the same side of 0.5); regression, a score that moved less than :data:`SCORE_EPSILON` standard deviations
of the training target from the previous exit's (PABEE's rule for regression, a difference under a threshold; a fixed
epsilon keeps the knob one integer, so calibration and the bench sweep it as for classification).

p = |E| - 1: never exit early (p + 1 = |E| agreeing exits can only end at L); p = 0: every row exits at the first
exit. PABEE's own patience starts at 1; 0 is kept as the exact "first exit" end. Default |E| // 2 (PABEE's 6 of
12 on BERT-base). Per-row memory: the previous exit's prediction and the current run of agreements, indexed with the
rows when rows leave.
"""

from __future__ import annotations

import torch
from torch import Tensor

from geep.policies.base import ALL_TASKS, KnobSpec, Memory, Policy

# regression: two consecutive scores agree when they differ by less than this, in standard deviations of the
# training target (the head's own units).
SCORE_EPSILON = 0.1


class PatiencePolicy(Policy):
    name = "pabee"
    knob_names = ("patience",)
    tasks = ALL_TASKS
    reads = "each exit's prediction"

    def knob_spec(self, num_labels: int, num_exits: int) -> KnobSpec:
        top = num_exits - 1
        return KnobSpec(low=0, high=top, default=num_exits // 2, never=top, first=0, integer=True)

    def start(self, batch_size: int, device: torch.device, labels: Tensor | None = None) -> Memory:
        if self.layout.task == "classification":
            previous = torch.full((batch_size,), -1, dtype=torch.long, device=device)  # no label yet
        else:  # no prediction yet: NaN agrees with nothing
            shape = (batch_size, self.layout.outputs) if self.layout.task == "multi-label" else (batch_size,)
            previous = torch.full(shape, float("nan"), device=device)
        return {"previous": previous, "agreed": torch.zeros((batch_size,), dtype=torch.long, device=device)}

    def decide(self, logits: Tensor, knob: float | None, memory: Memory) -> tuple[Tensor, Memory]:
        outputs = self.layout.task_outputs(logits)
        previous = memory["previous"]
        if self.layout.task == "classification":
            current = outputs.argmax(-1)  # (B,)
            same = current == previous
        elif self.layout.task == "multi-label":
            current = (outputs >= 0).float()  # (B, C): the label set (sigmoid >= 0.5)
            same = (current == previous).all(-1)
        else:
            current = outputs[..., 0].float()  # (B,): the standardised score
            same = (current - previous).abs() < SCORE_EPSILON
        agreed = torch.where(same, memory["agreed"] + 1, 0)
        return agreed >= int(knob), {"previous": current, "agreed": agreed}
