"""Calibration: choose each policy's knob on dev and store it as the model's default.

Accuracy and FLOPs for every knob come from ONE pass that records every exit's logits for every dev row (exact,
since a row's outputs do not depend on its batch); each policy's batching is replayed on the row lengths for the
FLOPs. Nothing re-runs the model per knob.
"""

from __future__ import annotations

from dataclasses import dataclass

from geep.errors import GeepError


@dataclass(frozen=True)
class KnobPoint:
    """One knob of one policy, scored on dev. accuracy in [0, 1]; flops_speedup vs the ``full`` policy."""

    policy: str
    knob: float
    accuracy: float
    flops_speedup: float
    mean_exit_layer: float


def choose_knob(points: list[KnobPoint], full_accuracy: float, *, target_speedup: float | None = None,
                max_accuracy_drop: float | None = None) -> KnobPoint:
    """The knob that meets the target, from the points of ONE policy.

    ``target_speedup`` X: among knobs whose FLOPs speed-up is at least X, the most accurate (ties: the faster).
    ``max_accuracy_drop`` D (points): among knobs whose accuracy is at least full's minus D, the fastest (ties: the
    more accurate). An unreachable target raises GeepError naming the best reachable value.
    """
    if (target_speedup is None) == (max_accuracy_drop is None):
        raise GeepError("give exactly one of --target-speedup and --max-accuracy-drop")
    if not points:
        raise GeepError("nothing to calibrate: no knob points")
    policy = points[0].policy
    if target_speedup is not None:
        ok = [p for p in points if p.flops_speedup >= target_speedup]
        if not ok:
            best = max(p.flops_speedup for p in points)
            raise GeepError(f"{policy}: a FLOPs speed-up of {target_speedup:g}x is unreachable on dev; "
                            f"the best reachable is {best:.2f}x")
        return max(ok, key=lambda p: (p.accuracy, p.flops_speedup))
    floor = full_accuracy - max_accuracy_drop / 100.0
    ok = [p for p in points if p.accuracy >= floor - 1e-12]
    if not ok:
        best = max(p.accuracy for p in points)
        raise GeepError(f"{policy}: an accuracy drop of at most {max_accuracy_drop:g} points is unreachable on dev; "
                        f"the smallest reachable drop is {100 * (full_accuracy - best):.2f} points")
    return max(ok, key=lambda p: (p.flops_speedup, p.accuracy))
