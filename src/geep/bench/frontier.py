"""Which knobs the bench times: points along each policy's FLOPs frontier, densest near the accuracy budget.

"Accuracy" here is a point's score, the task's primary metric (a classifier's accuracy). The sweep scores every knob
of a grid for accuracy and FLOPs (cheap: one all-exits pass, replayed); wall-clock
costs a run per repeat, so only some knobs are timed. "The fastest within 1 point of full" is read from the FLOPs
frontier (the Pareto frontier in (FLOPs speed-up, accuracy)): its fastest point whose accuracy is within the budget
is the **budget point**, and it is always timed, with its neighbours on the frontier on both sides (the next more
accurate, then the next faster), then points spread evenly (in log FLOPs speed-up) over the rest of the frontier.
A knob at which no row exits early is never timed (it does ``full``'s work; see ``geep.bench.runner``): the frontier
is taken over the points that can be timed, so the budget point is the fastest timeable point within the budget.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from geep.evaluation.metrics import get_field, pareto_frontier


def frontier_indices(points: Sequence[Any], keep: Callable[[int], bool] | None = None) -> list[int]:
    """Indices into ``points`` (objects or dicts with ``flops_speedup`` and ``accuracy``) of their Pareto frontier,
    slowest (most accurate) first; ``keep(i)`` False leaves point i out before the frontier is taken."""
    rows = [{"i": i, "flops_speedup": get_field(p, "flops_speedup"), "accuracy": get_field(p, "score")}
            for i, p in enumerate(points) if keep is None or keep(i)]
    return [row["i"] for row in pareto_frontier(rows, "flops_speedup", "accuracy")]


def budget_point(points: Sequence[Any], frontier: Sequence[int], floor: float) -> int | None:
    """Position in ``frontier`` of its fastest point with accuracy >= ``floor``, or None when none reaches it."""
    within = [j for j, i in enumerate(frontier) if get_field(points[i], "score") >= floor - 1e-12]
    return within[-1] if within else None


def frontier_knobs(points: Sequence[Any], n: int, floor: float, keep: Callable[[int], bool] | None = None
                   ) -> list[int]:
    """Indices into ``points`` (a policy's scored grid) of at most ``n`` knobs to time, sorted.

    Taken from the FLOPs frontier of the points ``keep`` allows, in this order: the budget point (the fastest with
    accuracy >= ``floor``; where none reaches the floor, the most accurate), its more accurate neighbour, its faster
    neighbour, then one frontier point nearest each of the remaining targets spread evenly in log FLOPs speed-up over
    the frontier's range, both ends included (one target: the fast end). A frontier of at most ``n`` points is timed
    whole.
    """
    frontier = frontier_indices(points, keep)
    if len(frontier) <= n:
        return sorted(frontier)
    anchor = budget_point(points, frontier, floor)
    anchor = 0 if anchor is None else anchor
    order = [anchor, anchor - 1, anchor + 1]
    chosen: list[int] = []
    for j in order:
        if 0 <= j < len(frontier) and j not in chosen and len(chosen) < n:
            chosen.append(j)
    logs = [math.log(max(get_field(points[i], "flops_speedup"), 1e-12)) for i in frontier]
    spare = n - len(chosen)
    for s in range(spare):  # one spare: the fast end (the slow end is near full, where the budget point usually is)
        share = 1.0 if spare == 1 else s / (spare - 1)
        target = logs[0] + (logs[-1] - logs[0]) * share
        free = [j for j in range(len(frontier)) if j not in chosen]
        if not free:
            break
        chosen.append(min(free, key=lambda j: (abs(logs[j] - target), j)))
    return sorted(frontier[j] for j in chosen)


def record_exits_early(record: Any) -> bool:
    """Whether a bench record's knob lets any row leave before the last exit (``full`` counts as timeable)."""
    if record["policy"] == "full":
        return True
    histogram = {int(k): v for k, v in record["exit_histogram"].items()}
    last = max(histogram)
    return any(count > 0 and layer < last for layer, count in histogram.items())
