"""``ponder``: learned halting (Graves, "Adaptive Computation Time for Recurrent Neural Networks", 2016, arXiv:1603.08983;
Banino, Balaguer & Blundell, "PonderNet: Learning to Ponder", 2021, arXiv:2107.05407; applied to encoders' layers by
PALBERT, Balagansky & Gavrilov, 2022).

A halting head per exit k (``geep.modeling.heads.HaltingHeads``) reads the pooled h_k and gives lambda_k =
sigmoid(s_k), the probability of halting at exit k given that no earlier exit halted; at the last exit L,
lambda_L = 1 (every row halts there). The halting distribution over the exits E = (k_1 .. k_n) is PonderNet's Eq. 2,

    p_1 = lambda_1,   p_i = lambda_i * prod_{j < i} (1 - lambda_j),

and the loss its Eq. 5-6: the expected task loss under p plus beta times the KL divergence from a geometric prior,

    L = sum_i p_i * CE(z_i, y)  +  beta * KL(p || p_G),   p_G(i) = lambda_p (1 - lambda_p)^(i - 1),

each term averaged over the batch. The KL term is PonderNet's replacement for ACT's ponder cost (ACT, Eq. 12: the
steps taken plus the remainder): both keep the halting from always taking every step. What geep adds or changes:
- p_G is truncated to the n exits and renormalised (PonderNet's runs up to a maximum number of steps too).
- beta = 0.01 as in PonderNet's experiments; lambda_p = 0.2 is geep's choice (a prior mean of 5 exits).
- The halting heads read h_k detached (as BERxiT's exit module here): both terms train the heads through p, and
  no halting gradient reaches the backbone; the backbone and the exit heads learn from the expected loss, each
  exit's cross entropy weighted by its p_i (PonderNet trains one network end to end).
- Classification only: the expected loss needs each row's loss at each exit (cross entropy).

The policy that reads the heads halts at the first exit whose accumulated halting probability
sum_{j <= i} p_j = 1 - prod_{j <= i} (1 - lambda_j) reaches 1 - eps (ACT's halting rule, Eq. 8):
``geep.policies.ponder``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from geep.tasks import Task

BETA = 0.01  # PonderNet's weight of the KL term
PRIOR = 0.2  # lambda_p of the geometric prior (geep's choice)


def halting_distribution(signals: Tensor) -> Tensor:
    """p (n, B) from the halting heads' logits s (n, B) (the last exit's is ignored: lambda = 1 there)."""
    lam = torch.sigmoid(signals.float())  # (n, B)
    lam = torch.cat([lam[:-1], torch.ones_like(lam[-1:])])  # lambda_L = 1
    survive = torch.cumprod(torch.cat([torch.ones_like(lam[:1]), 1.0 - lam[:-1]]), dim=0)  # (n, B): prod_{j<i}
    return lam * survive


def geometric_prior(n: int, prior: float = PRIOR) -> Tensor:
    """p_G over n steps: lambda_p (1 - lambda_p)^(i - 1), i = 1..n, renormalised to sum to 1: (n,)."""
    steps = torch.arange(n, dtype=torch.float64)
    p = prior * (1.0 - prior) ** steps
    return (p / p.sum()).float()


def ponder_loss(exit_logits: Tensor, diverse_logits: Tensor | None, labels: Tensor, exit_layers: list[int], *,
                task: Task, exit_signals: Tensor, beta: float = BETA, prior: float = PRIOR) -> Tensor:
    """PonderNet's loss. exit_logits (n, B, C), exit_signals (n, B, 1) (the halting heads' logits), labels (B,)."""
    n, B, C = exit_logits.shape
    p = halting_distribution(exit_signals[..., 0])  # (n, B)
    ce = F.cross_entropy(exit_logits.reshape(n * B, C), labels.repeat(n), reduction="none").view(n, B)  # (n, B)
    expected = (p * ce).sum(0).mean()
    p_g = geometric_prior(n, prior).to(p)[:, None]  # (n, 1)
    kl = (p * (torch.log(p.clamp_min(1e-12)) - torch.log(p_g))).sum(0).mean()
    return expected + beta * kl


__all__ = ["BETA", "PRIOR", "geometric_prior", "halting_distribution", "ponder_loss"]
