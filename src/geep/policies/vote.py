"""``vote`` (after Sun et al., "Early Exiting with Ensemble Internal Classifiers", 2021, arXiv:2105.13792,
voting-based exiting): the exits so far vote, and the vote decides both the label and when to stop.

Each exit k votes for every class with its probability p_k(c) (a vote weighted by the exit's confidence), so after
exit k the votes are V(c) = sum_{j <= k} p_j(c) and the answer is argmax_c V(c), with probabilities V / k (the mean
of the exits' softmaxes). A row leaves when the leading class holds at least a share t of the votes ALL |E| exits
cast, max_c V(c) >= t |E|. For t > 1/2 that is final: no later exit can outvote it, so the row answers what the vote of
every exit would. Smaller t trade that guarantee for speed. Knob t in [0, 1]; t = 1: never exit early (explicit);
t = 0: every row exits at the first exit (answering its own softmax). Default 0.5. Needs no retraining; the memory
(V (B, C)) moves with its rows, and rows reaching L answer with the vote of every exit.
"""

from __future__ import annotations

import torch
from torch import Tensor

from geep.policies.base import KnobSpec, Memory, Policy, all_leave, none_leave


class VotePolicy(Policy):
    name = "vote"
    knob_names = ("threshold",)
    reads = "the softmaxes of every exit so far"
    answers_from_memory = True

    def knob_spec(self, num_labels: int, num_exits: int) -> KnobSpec:
        return KnobSpec(low=0.0, high=1.0, default=0.5, never=1.0, first=0.0)

    def start(self, batch_size: int, device: torch.device, labels: Tensor | None = None) -> Memory:
        return {"votes": torch.zeros((batch_size, 0), device=device)}  # (B, C) once the first exit has voted

    def decide(self, logits: Tensor, knob: float | None, memory: Memory) -> tuple[Tensor, Memory]:
        if self.layout.exits is None:
            raise ValueError("the vote policy's total follows the model's exits: bind it to the model's layout")
        p = self.layout.task_outputs(logits).float().softmax(-1)  # (B, C)
        votes = memory["votes"]
        votes = p if votes.shape[-1] == 0 else votes + p
        memory = {"votes": votes}
        if knob >= 1.0:
            return none_leave(logits), memory
        if knob <= 0.0:
            return all_leave(logits), memory
        return votes.max(-1).values >= knob * self.layout.exits, memory

    def outputs(self, logits: Tensor, memory: Memory) -> Tensor:
        """The vote as outputs: log V (its softmax is V / k, its argmax the leading class), then any trailing
        signal columns as they are."""
        task = self.layout.task_outputs(logits)
        return torch.cat([memory["votes"].log().to(logits.dtype), logits[..., task.shape[-1]:]], -1)
