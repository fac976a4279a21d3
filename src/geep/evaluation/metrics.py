"""Metrics: macro-F1, expected calibration error, the Pareto frontier of (speed, accuracy) points, and throughput interpolated on it."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor


def macro_f1(predictions: Tensor, labels: Tensor, num_labels: int) -> float:
    """Macro-averaged F1 over the classes (a class absent from both counts as F1 0 only if predicted)."""
    scores = []
    for c in range(num_labels):
        tp = int(((predictions == c) & (labels == c)).sum())
        fp = int(((predictions == c) & (labels != c)).sum())
        fn = int(((predictions != c) & (labels == c)).sum())
        if tp + fp + fn:
            scores.append(2 * tp / (2 * tp + fp + fn))
    return sum(scores) / len(scores) if scores else 0.0


def get_field(point: Any, key: str) -> Any:
    """``point[key]`` for a mapping (a bench record), else the attribute (a scored point). ``score`` (the task's
    primary metric) falls back to ``accuracy`` where a point has none: records written before tasks existed, whose
    score was their accuracy."""
    if key == "score":
        value = point.get("score") if isinstance(point, Mapping) else getattr(point, "score", None)
        return get_field(point, "accuracy") if value is None else value
    return point[key] if isinstance(point, Mapping) else getattr(point, key)


def score_of(point: Any) -> float:
    """A point's or record's primary-metric score (:func:`get_field` of ``score``)."""
    return get_field(point, "score")


def metric_of(point: Any) -> str:
    """The name of the metric a point's score is (``accuracy`` for records written before tasks existed)."""
    value = point.get("metric") if isinstance(point, Mapping) else getattr(point, "metric", None)
    return value or "accuracy"


def pareto_frontier(points: Iterable[Any], x: str, y: str) -> list[Any]:
    """The points not dominated in (x, y), both larger-is-better, sorted by x ascending (so y descending).

    ``points`` are dicts (records) or objects (e.g. ``KnobPoint``); ``x`` and ``y`` name their fields. A point is
    dominated when another has x' >= x and y' >= y with at least one strictly greater. Of points equal in both,
    the first (in input order) is kept. Points whose x or y is None or NaN are ignored.
    """
    valid = []
    for i, p in enumerate(points):
        px, py = get_field(p, x), get_field(p, y)
        if px is None or py is None or (isinstance(px, float) and math.isnan(px)) or \
                (isinstance(py, float) and math.isnan(py)):
            continue
        valid.append((float(px), float(py), i, p))
    # Largest x first, and for equal x the largest y first; then a point is on the frontier iff its y beats
    # every y seen so far (those all have x' >= x).
    valid.sort(key=lambda t: (-t[0], -t[1], t[2]))
    frontier, best_y = [], -math.inf
    for px, py, _, p in valid:
        if py > best_y:
            frontier.append(p)
            best_y = py
    frontier.reverse()
    return frontier


def interpolated_throughput(records: Iterable[Mapping[str, Any]], accuracy: float, *,
                            speed: str = "samples_per_s") -> float | None:
    """The highest throughput (samples/s) one policy reaches at an accuracy (the records' score: the task's
    primary metric) of at least ``accuracy``.

    ``records``: the timed records of ONE (model, policy, batch size) -- records whose ``speed`` is None
    (untimed) are ignored; mixing models, policies or batch sizes is a ValueError. Their Pareto frontier in
    (``speed``, accuracy) is taken (:func:`pareto_frontier`), sorted by throughput t_1 < ... < t_m with
    accuracies a_1 > ... > a_m. Then:

    - ``accuracy`` above a_1 (more than any timed point reaches) or no timed record: None;
    - ``accuracy`` <= a_m: t_m (the fastest point already reaches it);
    - otherwise, with a_i >= accuracy > a_{i+1}: ``t_i + (t_{i+1} - t_i) * (a_i - accuracy) / (a_i - a_{i+1})``,
      linear interpolation in accuracy between the adjacent frontier points (exactly t_i when a_i == accuracy).

    ``speed`` may name another larger-is-better field (``wall_speedup``, ``flops_speedup``).
    """
    records = [r for r in records if r.get(speed) is not None]
    groups = {(r.get("model"), r.get("policy"), r.get("batch_size")) for r in records}
    if len(groups) > 1:
        raise ValueError(f"interpolated_throughput takes one (model, policy, batch size), "
                         f"got {sorted(groups, key=str)}")
    frontier = pareto_frontier(records, speed, "score")
    if not frontier or accuracy > score_of(frontier[0]):
        return None
    for slow, fast in zip(frontier, frontier[1:]):
        a_i, a_j = score_of(slow), score_of(fast)
        if a_i >= accuracy > a_j:
            t_i, t_j = slow[speed], fast[speed]
            return float(t_i + (t_j - t_i) * (a_i - accuracy) / (a_i - a_j))
    return float(frontier[-1][speed])


def difficulty_inversion_score(confidence: Tensor, wrong: Tensor) -> float | None:
    """CascadeBERT's Difficulty Inversion Score (Li et al., Findings of EMNLP 2021, Sec. 5): how well a confidence
    ranks rows by difficulty. A row is hard (d = 1) when the exit answers it wrongly, easy (d = 0) otherwise; an
    inversion is a pair whose hard row is the more confident. DIS = 1 - I / K with I the inversions (a tie in
    confidence counts 1/2) and K = (#easy)(#hard), the most there can be: 1 when every easy row is more confident
    than every hard one, 0.5 for a random order (it equals the ROC AUC of the confidence for "answered right").
    ``confidence`` (N,), ``wrong`` (N,) bool; None when no row is easy or none is hard (nothing to rank)."""
    c = confidence.double().flatten()
    hard = wrong.bool().flatten()
    easy_c, hard_c = c[~hard], c[hard]
    K = easy_c.numel() * hard_c.numel()
    if K == 0:
        return None
    # I = sum over hard rows of (#easy rows below it + half the easy rows it ties), by sorting the easy ones
    easy_sorted = easy_c.sort().values
    below = torch.searchsorted(easy_sorted, hard_c, right=False)
    not_above = torch.searchsorted(easy_sorted, hard_c, right=True)
    inversions = below.double().sum() + 0.5 * (not_above - below).double().sum()
    return float(1.0 - inversions / K)


ECE_BINS = 15  # Guo et al. 2017's M


def expected_calibration_error(probabilities: Tensor, labels: Tensor, bins: int = ECE_BINS) -> float:
    """Expected calibration error (Naeini et al. 2015; Guo et al., ICML 2017, Eq. 3) of a classifier's
    probabilities (N, C) on labels (N,): ECE = sum_m |B_m| / N * |acc(B_m) - conf(B_m)|, the rows binned by their
    confidence max_c p(c) into ``bins`` equal-width bins I_m = ((m - 1) / M, m / M] (a confidence of exactly 0, which
    no softmax gives, goes to the first). acc(B_m): the share of B_m whose argmax is the label; conf(B_m): its mean
    confidence. No rows: 0."""
    n = probabilities.shape[0]
    if n == 0:
        return 0.0
    confidence, predicted = probabilities.double().max(-1)  # (N,), (N,)
    right = (predicted == labels.to(predicted.device)).double()  # (N,)
    edges = torch.arange(1, bins + 1, dtype=torch.float64, device=confidence.device) / bins  # (M,) m / M
    which = torch.bucketize(confidence, edges).clamp(max=bins - 1)  # (N,) m - 1: (m - 1) / M < conf <= m / M
    gap = (torch.bincount(which, weights=right, minlength=bins)
           - torch.bincount(which, weights=confidence, minlength=bins)).abs()  # (M,) |B_m| * |acc - conf|
    return float(gap.sum() / n)
