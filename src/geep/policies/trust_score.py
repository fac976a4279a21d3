"""``trust-score`` (Jiang, Kim, Guan & Gupta, "To Trust or Not to Trust a Classifier", NeurIPS 2018, Definition 1):
exit at k when the trust score of the exit's prediction is at least t,

    T_k(x) = d(r_k(x), H_{k, c~}) / (d(r_k(x), H_{k, y^}) + 1e-12),   y^ = argmax_c z_k(c),
    c~ = argmin_{c != y^} d(r_k(x), H_{k, c}),

the distance of the row's exit-k representation to the nearest other class's set over its distance to the predicted
class's set (the sets H_{k,c}: bounded, alpha-filtered subsets of the training rows' representations,
``geep/modeling/trust_score.py``, fitted after training by ``geep fit-means --statistics trust-score``; the 1e-12 is
the authors' code's ``min_dist``). T > 1: the row lies nearer the training rows of the class it is given than of any
other.

The knob t lies in [0, 4]: t = 0 exits every row at the first exit (explicit: a trust score is never negative);
t = 4 never exits early (explicit; a row trusted 4 times over would otherwise leave). Default 1.5. A leaving row answers
with its exit head's prediction (the sets decide only when to stop). Classification only; the model needs fitted
sets. Each row is judged on its own distances and head, so the rule is batch invariant.
"""

from __future__ import annotations

from torch import Tensor

from geep.policies.base import KnobSpec, Memory, Policy, all_leave, none_leave

MIN_DIST = 1e-12  # the authors' code's min_dist, which keeps the ratio finite
HIGH = 4.0


class TrustScorePolicy(Policy):
    name = "trust-score"
    knob_names = ("threshold",)
    reads = "each exit's trust score (fitted by `geep fit-means --statistics trust-score`)"
    needs_trust_score = True

    def knob_spec(self, num_labels: int, num_exits: int) -> KnobSpec:
        return KnobSpec(low=0.0, high=HIGH, default=1.5, never=HIGH, first=0.0)

    def trust(self, logits: Tensor) -> Tensor:
        """(B,) the trust score of each row's predicted class at this exit, from its outputs (B, K + S)."""
        predicted = self.layout.task_outputs(logits).argmax(-1, keepdim=True)  # (B, 1)
        d = self.layout.trust_distances(logits).float()  # (B, C)
        to_predicted = d.gather(1, predicted).squeeze(1)  # (B,)
        to_other = d.scatter(1, predicted, float("inf")).min(-1).values  # (B,)
        return to_other / (to_predicted + MIN_DIST)

    def decide(self, logits: Tensor, knob: float | None, memory: Memory) -> tuple[Tensor, Memory]:
        if knob >= HIGH:
            return none_leave(logits), memory
        if knob <= 0.0:
            return all_leave(logits), memory
        return self.trust(logits) >= knob, memory

    def confidence_at(self, layer: int, logits: Tensor, knob=None) -> Tensor:
        return self.trust(logits)


__all__ = ["TrustScorePolicy"]
