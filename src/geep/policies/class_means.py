"""``class-means`` (Gormez & Koyuncu, "Class Means as an Early Exit Decision Mechanism", 2021, arXiv:2103.01148):
exit at k when the row's representation lies near enough to some class's mean, min_c d_{k,c} <= t, where d_{k,c} is
the Euclidean distance of exit k's pooled h_k (unit length) to the mean of class c's training rows at exit k
(``geep/modeling/class_means.py``; fitted after training by ``geep fit-means``, no retraining).

The distances are unit-length ones, so 0 <= d <= 2 at every exit and t in [0, 2]: t = 0 never exits early (explicit:
a distance of exactly 0 is a representation equal to a mean); t = 2 exits every row at the first exit (explicit).
Default 0.5. A leaving row answers with its exit head's prediction: the class means decide only when to stop (the
paper's nearest-mean label is not used as the answer). Classification only; the model needs fitted class means.
Each row is judged on its own distances, so the rule is batch invariant.
"""

from __future__ import annotations

from torch import Tensor

from geep.policies.base import KnobSpec, Memory, Policy, all_leave, none_leave


class ClassMeansPolicy(Policy):
    name = "class-means"
    knob_names = ("threshold",)
    reads = "the distance of each exit's representation to the class means (fitted by `geep fit-means`)"
    needs_class_means = True

    def knob_spec(self, num_labels: int, num_exits: int) -> KnobSpec:
        return KnobSpec(low=0.0, high=2.0, default=0.5, never=0.0, first=2.0)

    def decide(self, logits: Tensor, knob: float | None, memory: Memory) -> tuple[Tensor, Memory]:
        if knob <= 0.0:
            return none_leave(logits), memory
        if knob >= 2.0:
            return all_leave(logits), memory
        nearest = self.layout.class_distances(logits).float().min(-1).values  # (B,)
        return nearest <= knob, memory
