"""``elbert`` (ELBERT's two-stage early exit, Xie et al., "ELBERT: Fast ALBERT with Confidence-Window Based Early
Exit", ICASSP 2021, arXiv:2107.00175; its code's rule ``bias_1`` in ``ExitLayer.lower_than_thres``): exit at k when

1. the normalised entropy H(p_k) / ln C is at most t (the first stage, FastBERT's rule), or
2. the confidence window holds: over the last N exits up to k, one and the same class had probability above 1/2 at
   every one of them (the window over recent exits; ELBERT's margin is 0, its default).

N = max(2, ceil(|E| / 3)): ELBERT's window of 8 of ALBERT-large's 24 layers (2 of MiniLM's 6). For two classes
"probability above 1/2" is ELBERT's own test; for more, a class above 1/2 is the argmax, so the window asks that the
argmax held a majority of the probability at each of the last N exits. Knob t in [0, 1]; t = 0: never exit early
(the window included, an explicit end); t = 1: every row exits at the first exit. Default 0.3 (fastbert's). Needs
no retraining. Per-row memory: the last majority class and how many exits in a row it has held.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from geep.policies.base import KnobSpec, Memory, Policy, all_leave, entropy, none_leave


def window(num_exits: int) -> int:
    """N: how many consecutive exits the confidence window spans for a model with ``num_exits`` exits."""
    return max(2, math.ceil(num_exits / 3))


class ElbertPolicy(Policy):
    name = "elbert"
    knob_names = ("threshold",)
    reads = "a softmax over classes at the last exits"

    def knob_spec(self, num_labels: int, num_exits: int) -> KnobSpec:
        return KnobSpec(low=0.0, high=1.0, default=0.3, never=0.0, first=1.0)

    def start(self, batch_size: int, device: torch.device, labels: Tensor | None = None) -> Memory:
        return {"held": torch.full((batch_size,), -1, dtype=torch.long, device=device),  # no majority class yet
                "run": torch.zeros((batch_size,), dtype=torch.long, device=device)}

    def decide(self, logits: Tensor, knob: float | None, memory: Memory) -> tuple[Tensor, Memory]:
        if self.layout.exits is None:
            raise ValueError("the elbert policy's window follows the model's exits: bind it to the model's layout")
        logits = self.layout.task_outputs(logits).float()  # (B, C)
        top_p, top_c = F.log_softmax(logits, -1).max(-1)  # (B,), (B,)
        majority = top_p.exp() > 0.5
        run = torch.where(majority, torch.where(top_c == memory["held"], memory["run"] + 1, 1), 0)
        memory = {"held": torch.where(majority, top_c, -1), "run": run}
        if knob <= 0.0:
            return none_leave(logits), memory
        if knob >= 1.0:
            return all_leave(logits), memory
        confident = entropy(logits) / math.log(logits.shape[-1]) <= knob
        return confident | (run >= window(self.layout.exits)), memory
