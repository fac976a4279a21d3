"""``sentee`` (SENTEE, Li et al., "Accelerating BERT Inference for Sequence Labeling via Early-Exit", ACL 2021,
Sec. 3.2): a sentence leaves at exit k when the largest uncertainty of its tokens is at most t,

    max_i u_k(i) <= t,   u_k(i) = H(p_k(i)) / ln C,

the normalised entropy of token i's tag softmax at exit k (the paper's uncertainty, FastBERT's normalisation, so t
lies in [0, 1]). The max runs over the row's real tokens: every position the token head flags (subwords after a
word's first included: a superset of the tagged positions, so the rule is never less strict than over words alone;
padding and the special tokens never count). Decided for the whole batch at once, (B,) from (B, M, C).

t = 0: no row leaves before L; t = 1: every row leaves at the first exit (both implemented as such). Default 0.3.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from geep.policies.base import KnobSpec, Memory, Policy, all_leave, entropy, none_leave


def token_uncertainty(logits: Tensor, flag: Tensor) -> Tensor:
    """Normalised entropy (B, M) of each position's tag softmax (logits (B, M, C)), 0 where ``flag`` (B, M) is
    False (no real token: it never holds a row back)."""
    u = entropy(logits) / math.log(logits.shape[-1])  # (B, M)
    return torch.where(flag, u, torch.zeros_like(u))


class SenteePolicy(Policy):
    name = "sentee"
    knob_names = ("threshold",)
    tasks = ("token-classification",)
    reads = "each token's tag softmax"

    def knob_spec(self, num_labels: int, num_exits: int) -> KnobSpec:
        return KnobSpec(low=0.0, high=1.0, default=0.3, never=0.0, first=1.0)

    def decide(self, logits: Tensor, knob: float | None, memory: Memory) -> tuple[Tensor, Memory]:
        if knob <= 0.0:
            return none_leave(logits), memory
        if knob >= 1.0:
            return all_leave(logits), memory
        tags, flag = self.layout.token_outputs(logits)  # (B, M, C), (B, M)
        return token_uncertainty(tags, flag).amax(-1) <= knob, memory

    def confidence_at(self, layer: int, logits: Tensor, knob=None) -> Tensor:
        tags, flag = self.layout.token_outputs(logits)
        return -token_uncertainty(tags, flag).amax(-1)  # (B,)
