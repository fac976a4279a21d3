"""``ensemble``: the diversity objective of Sun et al., "Early Exiting with Ensemble Internal Classifiers" (2021,
arXiv:2105.13792, Section 3: the training objective of ensemble internal classifiers), the training half of the
method whose exit half is the ``vote`` policy (``geep/policies/vote.py``).

The paper derives, from the mutual information between the exits' predictions and the label, an objective of two
terms: an accuracy term, which is what earlier work trains (every exit's cross entropy), and a diversity term that
makes the exits agree on the right class and disagree on the wrong ones, so that a vote of the exits so far is
more often right than any one of them. Implemented here:

    L = sum_{k in E} CE(S_k(h_k), y)  -  lambda * sum_{m=2..|E|} 1/(m-1) sum_{n<m} mean_B JS(q_m || q_n)

where q_k is exit k's softmax over the classes other than the row's label y (the target's logit dropped, the rest
renormalised: a distribution that says nothing about how sure the exit is of y), and JS the Jensen-Shannon
divergence, in nats (0 <= JS <= log 2). Each exit is compared with the exits before it, the ones it votes beside.
Classification only; with two classes q is a single class, so the diversity term is 0 and the loss is the accuracy
term alone.

What was verified and what was not: the two-term structure (accuracy + diversity on the non-target classes) and
its purpose are the paper's abstract and Section 3 as recalled; the paper's text and equations were not available
to this implementation, and there is no released code. So the exact distance (JS here; the paper may use another
divergence between the non-target distributions), the pairing (each exit with its predecessors here) and the weight
lambda (1 here: both terms as the information-theoretic decomposition weighs them) are this file's choices, not
checked against the paper. JS is bounded, so the diversity term can never run the loss off to minus infinity (an
unbounded divergence such as KL can: non-target logits are free to grow apart without changing the target's CE).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from geep.errors import GeepError
from geep.tasks import Task

DIVERSITY_WEIGHT = 1.0  # lambda


def non_target_log_probs(exit_logits: Tensor, labels: Tensor) -> Tensor:
    """log q_k: each exit's log-softmax over the C-1 classes other than the row's label.

    exit_logits (|E|, B, C), labels (B,) class ids. Returns (|E|, B, C-1), the classes in their order with y left out.
    """
    num_exits, batch, classes = exit_logits.shape
    others = torch.arange(classes, device=labels.device)[None] != labels[:, None]  # (B, C), C-1 True per row
    kept = exit_logits[:, others].reshape(num_exits, batch, classes - 1)  # (|E|, B, C-1)
    return kept.log_softmax(-1)


def pairwise_js(log_q: Tensor) -> Tensor:
    """JS(q_m || q_n) for every pair of exits, per row. log_q (|E|, B, D) -> (|E|, |E|, B), in nats."""
    a, b = log_q[:, None], log_q[None, :]  # (|E|, 1, B, D), (1, |E|, B, D)
    log_mix = torch.logaddexp(a, b) - math.log(2.0)  # log((q_m + q_n) / 2), (|E|, |E|, B, D)
    kl_a = (a.exp() * (a - log_mix)).sum(-1)  # KL(q_m || mix)
    kl_b = (b.exp() * (b - log_mix)).sum(-1)
    return 0.5 * (kl_a + kl_b)


def diversity(exit_logits: Tensor, labels: Tensor) -> Tensor:
    """sum_{m=2..|E|} 1/(m-1) sum_{n<m} mean_B JS(q_m || q_n): how much each exit disagrees with the exits before it
    on the wrong classes. exit_logits (|E|, B, C), labels (B,). A scalar; 0 with one exit or two classes."""
    num_exits, _, classes = exit_logits.shape
    if num_exits < 2 or classes < 3:
        return exit_logits.new_zeros(())
    js = pairwise_js(non_target_log_probs(exit_logits, labels)).mean(-1)  # (|E|, |E|), mean over rows
    before = torch.ones(num_exits, num_exits, device=js.device).tril(-1)  # [m, n] = 1 for n < m
    per_exit = (js * before).sum(1)[1:] / before.sum(1)[1:]  # (|E|-1,): exit m's mean over the exits before it
    return per_exit.sum()


def ensemble_loss(exit_logits: Tensor, diverse_logits: Tensor | None, labels: Tensor, exit_layers: list[int], *,
                  task: Task, diversity_weight: float = DIVERSITY_WEIGHT) -> Tensor:
    """Every exit's cross entropy minus ``diversity_weight`` times :func:`diversity`.

    exit_logits (|E|, B, C), labels (B,) class ids. A task other than classification is a GeepError.
    """
    if task.name != "classification":
        raise GeepError(f"the ensemble objective applies to classification only, not {task.name}")
    accuracy = task.per_exit_loss(exit_logits, labels).sum()
    return accuracy - diversity_weight * diversity(exit_logits, labels)


__all__ = ["DIVERSITY_WEIGHT", "diversity", "ensemble_loss", "non_target_log_probs", "pairwise_js"]
