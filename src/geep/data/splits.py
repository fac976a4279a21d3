"""Seeded, stratified splits and subsets of rows: the same rows every time for the same labels and seed."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from geep.errors import GeepError

def stratified_split(labels: Sequence, fractions: Sequence[float], seed: int) -> list[list[int]]:
    """Split row indices into ``len(fractions)`` parts, class by class in proportion, the same way every time.

    Each class's rows are shuffled with ``random.Random(seed)`` and cut by largest remainder, so within a class
    the part sizes differ from ``n_class * fraction`` by less than one. A class with at least as many rows as
    there are parts gets a row in every part; any part still empty takes a row from the largest part.
    Returns one sorted list of row indices per part; together they cover every row exactly once.
    """
    fractions = [float(f) for f in fractions]
    if not fractions or any(f <= 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise GeepError(f"split fractions must be positive and sum to 1, got {fractions}")
    rng = random.Random(seed)
    parts: list[list[int]] = [[] for _ in fractions]
    for rows in _rows_by_class(labels):
        rng.shuffle(rows)
        counts = _apportion(len(rows), fractions)
        if len(rows) >= len(fractions):
            for k in range(len(counts)):
                if counts[k] == 0:
                    counts[k] += 1
                    counts[counts.index(max(counts))] -= 1
        start = 0
        for part, count in zip(parts, counts):
            part.extend(rows[start : start + count])
            start += count
    if len(labels) >= len(parts):
        for part in parts:
            if not part:
                donor = max(parts, key=len)
                part.append(donor.pop(rng.randrange(len(donor))))
    return [sorted(part) for part in parts]


def stratified_subset(labels: Sequence, n: int, seed: int) -> list[int]:
    """A seeded subset of ``n`` row indices (sorted) with the classes in the same proportions as ``labels``."""
    if n >= len(labels):
        return list(range(len(labels)))
    if n <= 0:
        return []
    rng = random.Random(seed)
    groups = _rows_by_class(labels)
    quotas = _apportion(n, [len(rows) / len(labels) for rows in groups])
    chosen: list[int] = []
    for rows, quota in zip(groups, quotas):
        chosen.extend(rng.sample(rows, quota))
    return sorted(chosen)


def _rows_by_class(labels: Sequence) -> list[list[int]]:
    """Row indices grouped by label, classes in a fixed (sorted) order so a seed always means the same split."""
    groups: dict[Any, list[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        groups[label].append(i)
    return [groups[key] for key in sorted(groups, key=lambda k: (type(k).__name__, str(k)))]


def _apportion(total: int, weights: Sequence[float]) -> list[int]:
    """Split the integer ``total`` in proportion to ``weights`` (summing to 1) by largest remainder."""
    exact = [total * w for w in weights]
    counts = [int(x) for x in exact]
    by_remainder = sorted(range(len(weights)), key=lambda k: (-(exact[k] - counts[k]), k))
    for k in by_remainder[: total - sum(counts)]:
        counts[k] += 1
    return counts
