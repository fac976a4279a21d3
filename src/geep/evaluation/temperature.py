"""Temperature scaling (Guo et al., "On Calibration of Modern Neural Networks", ICML 2017): one scalar T > 0 per
classifier, fitted on held-out rows so that softmax(z / T) is calibrated: T minimises the negative log-likelihood
NLL(T) = mean_i [logsumexp(z_i / T) - z_{i, y_i} / T]. The argmax never changes; only how confident it is.

A cascade's boundary rule reads ``max softmax(z / T_m)`` of member m (``geep.policies.cascade``); ``geep calibrate``
fits each T_m here on dev before it chooses the thresholds. A classifier's exits get one T_k each
(:func:`exit_temperatures`), which the ``confidence`` policy reads (RightTool's calibrated confidence), with each
exit's expected calibration error before and after (:func:`calibration_errors`).

NLL is convex in beta = 1 / T (a log-sum-exp of linear functions of beta, minus a linear term), so a golden-section
search over beta in [1 / T_MAX, 1 / T_MIN] finds its minimum.
"""

from __future__ import annotations

import math

from collections.abc import Sequence

import torch
from torch import Tensor

from geep.evaluation.metrics import expected_calibration_error

T_MIN, T_MAX = 0.05, 20.0
STEPS = 80  # golden-section steps: the bracket shrinks by 0.618^80, far below float precision


def nll(logits: Tensor, labels: Tensor, beta: float) -> float:
    """Mean negative log-likelihood of ``labels`` (N,) under softmax(beta * logits) (N, C)."""
    scaled = logits.double() * beta
    return float((torch.logsumexp(scaled, dim=-1) - scaled.gather(1, labels.long()[:, None]).squeeze(1)).mean())


def fit_temperature(logits: Tensor, labels: Tensor) -> float:
    """The temperature T in [T_MIN, T_MAX] minimising the NLL of ``labels`` (N,) under softmax(logits / T), logits
    (N, C). No rows: 1."""
    if logits.shape[0] == 0:
        return 1.0
    lo, hi = 1.0 / T_MAX, 1.0 / T_MIN
    g = (math.sqrt(5.0) - 1.0) / 2.0
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = nll(logits, labels, a), nll(logits, labels, b)
    for _ in range(STEPS):
        if fa <= fb:  # the minimum of a convex function lies in [lo, b]
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = nll(logits, labels, a)
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = nll(logits, labels, b)
    return 1.0 / ((lo + hi) / 2.0)


def exit_temperatures(exit_logits: Tensor, labels: Tensor) -> list[float]:
    """One temperature per exit, each fitted on its own: exit_logits (N, |E|, C) (the task's columns), labels (N,)."""
    return [fit_temperature(exit_logits[:, i], labels) for i in range(exit_logits.shape[1])]


def calibration_errors(exit_logits: Tensor, labels: Tensor, temperatures: Sequence[float] | None = None
                       ) -> list[float]:
    """Each exit's expected calibration error (15 equal-width bins) of softmax(z_k / T_k) on labels (N,), from
    exit_logits (N, |E|, C); ``temperatures`` None: of the raw softmax."""
    out = []
    for i in range(exit_logits.shape[1]):
        z = exit_logits[:, i].double()
        if temperatures is not None:
            z = z / float(temperatures[i])
        out.append(expected_calibration_error(torch.softmax(z, dim=-1), labels))
    return out
