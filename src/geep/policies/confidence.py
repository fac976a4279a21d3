"""``confidence`` (RightTool: Schwartz et al., "The Right Tool for the Job: Matching Model and Instance
Complexities", ACL 2020): exit at k when max_c p_k(c) >= t, t in [0, 1], with p_k = softmax(z_k / T_k) the exit's
probabilities calibrated by temperature scaling (Guo et al., ICML 2017; RightTool Sec. 3: "we calibrate each
classifier's confidence with temperature scaling"), T_k fitted per exit on dev by ``geep calibrate`` (NLL) and bound
to the policy once by ``resolve_run``. A model without temperatures reads the raw softmax (T_k = 1, not applied).

t = 1: never exit early (a saturated softmax can give exactly 1.0, so this end is explicit); t = 0: every row
exits at the first exit. Default 0.9. Any t <= 1/C also exits everything at the first exit. Each row is judged on
its own scores, so the rule is batch invariant.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from geep.policies.base import KnobSpec, Memory, Policy, all_leave, none_leave


class ConfidencePolicy(Policy):
    name = "confidence"
    knob_names = ("threshold",)
    calibrated = True

    def knob_spec(self, num_labels: int, num_exits: int) -> KnobSpec:
        return KnobSpec(low=0.0, high=1.0, default=0.9, never=1.0, first=0.0)

    def decide(self, logits: Tensor, knob: float | None, memory: Memory) -> tuple[Tensor, Memory]:
        """The rule on scores already at their scale (raw, or divided by the exit's temperature)."""
        if knob >= 1.0:
            return none_leave(logits), memory
        if knob <= 0.0:
            return all_leave(logits), memory
        top = F.log_softmax(self.layout.task_outputs(logits).float(), dim=-1).max(-1).values.exp()  # (B,)
        return top >= knob, memory

    def decide_at(self, layer: int, logits: Tensor, knob: float | None, memory: Memory) -> tuple[Tensor, Memory]:
        if self.temperatures is None:
            return self.decide(logits, knob, memory)
        if knob >= 1.0:
            return none_leave(logits), memory
        if knob <= 0.0:
            return all_leave(logits), memory
        return self.confidence_at(layer, logits) >= knob, memory

    def confidence_at(self, layer: int, logits: Tensor, knob=None) -> Tensor:
        return F.log_softmax(self.scaled(layer, logits), dim=-1).max(-1).values.exp()  # (B,)
