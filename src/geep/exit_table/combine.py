"""From per-key exit distributions to a row's exit distribution, and from a distribution to a layer.

A combiner maps the per-key distributions p(l | k) (B, K, L) and key weights w (B, K) of a batch of rows to each
row's distribution q (B, L) and its total weight (B,); :data:`COMBINERS` names them. :func:`layers_from_distribution`
turns q into a predicted exit layer at a quantile tau.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

# --------------------------------------------------------------------------------------------------------
# Combining per-key distributions into a row distribution
# --------------------------------------------------------------------------------------------------------


def combine_mean(p: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    """Weighted mean of per-key exit distributions.

    Args:
        p: (B, K, L) per-key distributions p(l | k); entries with weight 0 are ignored.
        w: (B, K) non-negative key weights.

    Returns:
        q: (B, L) the weighted mean (undefined where the total weight is 0), and the total weight (B,).
    """
    total = w.sum(dim=1)  # (B,)
    num = (w.unsqueeze(-1) * p).sum(dim=1)  # (B, L)
    q = num / total.clamp_min(torch.finfo(total.dtype).tiny).unsqueeze(-1)
    return q, total


def combine_geometric(p: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    """Length-normalised log-odds: q(l) proportional to exp(sum_k w_k log p(l|k) / sum_k w_k).

    A weighted geometric mean of the per-key distributions: keys that agree sharpen q instead of averaging
    towards the prior, and dividing by the total weight keeps long rows from becoming over-confident.
    p (B, K, L), w (B, K) -> q (B, L), total (B,).
    """
    total = w.sum(dim=1)  # (B,)
    log_p = p.clamp_min(1e-300).log()  # (B, K, L); p is 0 only where a layer has neither counts nor prior
    mean_log = (w.unsqueeze(-1) * log_p).sum(dim=1) / total.clamp_min(torch.finfo(total.dtype).tiny).unsqueeze(-1)
    return torch.softmax(mean_log, dim=-1), total


def combine_vote(p: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    """A weighted vote of per-key median layers: q(l) = sum_k w_k [median_k == l] / sum_k w_k.

    The row's tau-quantile of q is then the weighted tau-quantile of its keys' own predicted layers.
    p (B, K, L), w (B, K) -> q (B, L), total (B,).
    """
    total = w.sum(dim=1)  # (B,)
    median = (p.cumsum(dim=-1) < 0.5).sum(dim=-1).clamp(max=p.shape[-1] - 1)  # (B, K) 0-based layer
    votes = torch.zeros_like(p[:, 0]).scatter_add_(1, median, w)  # (B, L)
    return votes / total.clamp_min(torch.finfo(total.dtype).tiny).unsqueeze(-1), total


# Registry of combiners, looked up by name. A combiner maps (p (B, K, L), w (B, K)) to (q (B, L), total (B,));
# rows whose total is 0 fall back to the prior.
COMBINERS: dict[str, Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]] = {
    "mean": combine_mean, "geometric": combine_geometric, "vote": combine_vote}


# --------------------------------------------------------------------------------------------------------
# From a distribution to a layer
# --------------------------------------------------------------------------------------------------------


def check_tau(tau: float) -> None:
    if not 0.0 <= float(tau) <= 1.0:  # also rejects NaN
        raise ValueError(f"tau must lie in [0, 1], got {tau!r}")


def _exit_tensor(exit_layers: Sequence[int] | None, num_layers: int, device: torch.device) -> Tensor:
    """Sorted distinct exits (E,) as a long tensor; L is always an exit (the teacher), added if missing."""
    exits = sorted({int(k) for k in exit_layers}) if exit_layers is not None else []
    bad = [k for k in exits if not 1 <= k <= num_layers]
    if bad:
        raise ValueError(f"exit layers must lie in 1..{num_layers}, got {bad}")
    if exit_layers is None:
        exits = list(range(1, num_layers + 1))
    elif num_layers not in exits:
        exits.append(num_layers)
    return torch.tensor(exits, dtype=torch.long, device=device)


def layers_from_distribution(q: Tensor, tau: float, exit_layers: Sequence[int] | None = None) -> Tensor:
    """Predicted exit layer of each row: the tau-quantile of ``q``, snapped up to an available exit.

    The raw layer is the smallest l (1-based) with ``sum_{j <= l} q(j) >= tau``; it is then raised to the
    nearest layer in ``exit_layers`` at or above it (default: all of 1..L; L is always included). The ends
    are exact: ``tau == 0`` gives every row the first exit, ``tau == 1`` gives every row L.

    Args:
        q: (B, L) exit distributions (rows sum to 1).
        tau: quantile in [0, 1]; a larger tau exits later (safer, slower).
        exit_layers: the layers that have an exit head.

    Returns:
        (B,) long tensor of layers in 1..L, on q's device.
    """
    check_tau(tau)
    if q.dim() != 2:
        raise ValueError(f"q must be (B, L), got shape {tuple(q.shape)}")
    B, L = q.shape
    exits = _exit_tensor(exit_layers, L, q.device)  # (E,)
    if tau == 0.0:
        return exits[0].expand(B).clone()
    if tau == 1.0:
        return torch.full((B,), L, dtype=torch.long, device=q.device)
    cdf = q.cumsum(dim=-1)  # (B, L)
    raw = (cdf < tau).sum(dim=-1) + 1  # (B,) smallest l with cdf >= tau; L + 1 if float error stops short
    raw = raw.clamp(max=L)
    return exits[torch.searchsorted(exits, raw)]  # (B,) first exit >= raw; L is an exit, so always found
