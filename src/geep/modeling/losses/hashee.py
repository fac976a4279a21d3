"""``hashee``: HashEE's training (Sun et al., "A Simple Hash-Based Early Exiting Approach For Language Understanding
and Generation", Findings of ACL 2022, Sec. 3; the released code, github.com/txsun1997/HashEE, ``train_token.py`` and
``ElasticBertHeeForSequenceClassification``).

Each token t is hashed to a layer hash(t) before training (``geep.modeling.token_hash``: random or frequency); in the
forward pass token t runs layers 1..hash(t) and is copied forward after, still attended to as a key and value by the
tokens that go on (``geep.runtime.token_halting.halting_forward``, differentiable). No internal classifier is trained:
the loss is the task's at the last layer, on the halted states,

    L = loss(T(h_L^hash), y)        (classification: cross entropy; regression: squared error),

the code's ``CrossEntropyLoss`` / ``MSELoss`` of its one classifier. The model trains and predicts with the same
hash, so the halting seen in training is the halting at inference (policy ``hashee``).
"""

from __future__ import annotations

from torch import Tensor

from geep.tasks import Task


def hashee_loss(exit_logits: Tensor, diverse_logits: Tensor | None, labels: Tensor, exit_layers: list[int], *,
                task: Task) -> Tensor:
    """loss(T(h_L), y) where h_L was computed with tokens halting at their hashed layers: exit_logits (|E|, B, K) from
    ``halting_forward`` (the last is the teacher's)."""
    return task.loss(exit_logits[-1], labels)


__all__ = ["hashee_loss"]
