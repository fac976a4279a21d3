"""``ponder`` (learned halting: ACT, Graves 2016, arXiv:1603.08983, Eq. 8; PonderNet, Banino et al. 2021,
arXiv:2107.05407, Eq. 2): exit at the first exit k whose accumulated halting probability reaches 1 - eps,

    sum_{j <= k} p_j = 1 - prod_{j <= k} (1 - lambda_j) >= 1 - eps,   lambda_j = sigmoid(s_j),

s_j the halting head's logit at exit j (``geep.modeling.heads.HaltingHeads``, trained by the ``ponder`` objective,
``geep.modeling.losses.ponder``). The product prod_{j <= k} (1 - lambda_j), the probability of not having halted
yet, is each row's memory (``remaining``, (B,)); it follows its row through every re-batching, and each row's is
its own, so the rule is batch invariant. It is tested as ``remaining <= eps``, the same inequality.

The knob eps lies in [0, 1]: eps = 0 never exits early (explicit: a product of factors 1 - sigmoid is 0 only when a
sigmoid rounds to 1); eps = 1 exits every row at the first exit (explicit). Default 0.01, ACT's epsilon.
Classification only; the model needs the halting heads (``geep train --objective ponder``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from geep.policies.base import KnobSpec, Memory, Policy, all_leave, none_leave


class PonderPolicy(Policy):
    name = "ponder"
    knob_names = ("epsilon",)
    reads = "learned halting heads (trained by `geep train --objective ponder`)"
    needs_signal = True
    exit_module = "ponder"

    def knob_spec(self, num_labels: int, num_exits: int) -> KnobSpec:
        return KnobSpec(low=0.0, high=1.0, default=0.01, never=0.0, first=1.0)

    def start(self, batch_size: int, device: torch.device, labels: Tensor | None = None) -> Memory:
        return {"remaining": torch.ones(batch_size, device=device)}

    def decide(self, logits: Tensor, knob: float | None, memory: Memory) -> tuple[Tensor, Memory]:
        halting = torch.sigmoid(self.layout.signal(logits).float())  # (B,) lambda_k
        remaining = memory["remaining"] * (1.0 - halting)  # (B,) prod_{j <= k} (1 - lambda_j)
        memory = {**memory, "remaining": remaining}
        if knob <= 0.0:
            return none_leave(logits), memory
        if knob >= 1.0:
            return all_leave(logits), memory
        return remaining <= knob, memory


__all__ = ["PonderPolicy"]
