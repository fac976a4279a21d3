"""Calibration: choose each policy's knob on dev and store it as the model's default.

Accuracy and FLOPs for every knob come from ONE pass that records every exit's logits for every dev row (exact,
since a row's outputs do not depend on its batch); each policy's batching is replayed on the row lengths for the
FLOPs. Nothing re-runs the model per knob.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

import torch
from torch import Tensor

from geep.errors import GeepError
from geep.policies import get_policy

if TYPE_CHECKING:
    from geep.model import MultiExitClassifier

logger = logging.getLogger(__name__)

# Policies a model stores a default knob for (oracle needs labels; full has no knob).
CALIBRATED_POLICIES = ("fastbert", "deebert", "confidence", "pabee", "geep", "geep-verify")


@dataclass(frozen=True)
class KnobPoint:
    """One knob of one policy, scored on dev. accuracy in [0, 1]; flops_speedup vs the ``full`` policy."""

    policy: str
    knob: float | None
    accuracy: float
    flops_speedup: float
    mean_exit_layer: float
    macro_f1: float = 0.0
    exit_histogram: dict[int, int] = field(default_factory=dict)


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


@dataclass
class Sweep:
    """Every policy's knobs scored from one all-exits pass. ``full``: the full model's point."""

    full: KnobPoint
    points: dict[str, list[KnobPoint]]
    full_flops: int


def _point(policy: str, knob: float | None, logits: Tensor, exit_index: Tensor, labels: Tensor,
           exit_layers: Sequence[int], flops: int, full_flops: int) -> KnobPoint:
    """Scores rows that leave at ``exit_index`` (N,) into E, given every exit's logits (N, |E|, C)."""
    n = logits.shape[0]
    predictions = logits[torch.arange(n), exit_index].argmax(-1)  # (N,)
    layers = torch.tensor(exit_layers)[exit_index]  # (N,)
    histogram = {int(k): int((layers == k).sum()) for k in exit_layers}
    return KnobPoint(policy, knob, float((predictions == labels).double().mean()), full_flops / max(flops, 1),
                     float(layers.float().mean()), macro_f1(predictions, labels, logits.shape[-1]), histogram)


def sweep(model: "MultiExitClassifier", encoded: dict, labels: Tensor, *, policies: Sequence[str],
          batch_size: int = 32, grid_points: int = 21, exit_logits: Tensor | None = None) -> Sweep:
    """Accuracy, macro-F1, mean exit layer, exit histogram and FLOPs speed-up of every knob of every policy.

    One all-exits pass gives every exit's logits for every row (pass ``exit_logits`` to reuse one); each
    policy's decisions are replayed on them and its batching is replayed on the row lengths for the FLOPs.
    """
    from geep.engine import all_exit_logits, length_order, token_lengths
    from geep.flops import FlopsSpec, full_model_flops, replay_flops

    E, L, C = model.exit_layers, model.num_layers, model.config.num_labels
    lengths = token_lengths(encoded)
    if exit_logits is None:
        exit_logits = all_exit_logits(model, encoded, batch_size=batch_size).logits  # (N, |E|, C)
    labels = labels.long().cpu()
    spec = FlopsSpec.from_model(model)
    order = length_order(lengths)
    sorted_lengths = [lengths[i] for i in order]
    full_flops = full_model_flops(spec, sorted_lengths, batch_size).total
    last = torch.full((len(lengths),), len(E) - 1, dtype=torch.long)
    full = _point("full", None, exit_logits, last, labels, E, full_flops, full_flops)
    points: dict[str, list[KnobPoint]] = {}
    for name in policies:
        policy = get_policy(name)
        scored = []
        if policy.needs_table:
            scored = _sweep_buckets(model, encoded, policy, exit_logits, labels, lengths, spec, batch_size,
                                    grid_points, full_flops)
        else:
            for knob in policy.grid(C, len(E), grid_points):
                index = policy.replay(exit_logits, knob, labels)  # (N,) into E
                layers = torch.tensor(E)[index].tolist()
                flops = replay_flops(spec, sorted_lengths, batch_size, [layers[i] for i in order],
                                     exits=None if policy.reads_exits else [L]).total
                scored.append(_point(name, knob, exit_logits, index, labels, E, flops, full_flops))
        points[name] = scored
    return Sweep(full, points, full_flops)


def _sweep_buckets(model, encoded, policy, exit_logits, labels, lengths, spec, batch_size, grid_points, full_flops
                   ) -> list[KnobPoint]:
    """geep / geep-verify: predicted layers from the table at each tau; verify continues under fastbert at S."""
    from geep.exit_prediction import exit_distribution, predicted_layers, verify_exit_index
    from geep.scheduler import replay_bucket_flops

    E = model.exit_layers
    q = exit_distribution(model, encoded).cpu()  # (N, L): the model does not run
    position = {k: i for i, k in enumerate(E)}
    scored = []
    for tau in policy.grid(model.config.num_labels, len(E), grid_points):
        predicted = predicted_layers(model, q, tau)  # (N,) in E
        index = torch.tensor([position[int(k)] for k in predicted])
        if policy.verify:
            index = verify_exit_index(model, exit_logits, index)
        layers = torch.tensor(E)[index]
        flops = replay_bucket_flops(spec, lengths, predicted.tolist(), layers.tolist(), batch_size).total
        scored.append(_point(policy.name, tau, exit_logits, index, labels, E, flops, full_flops))
    return scored


def calibrate(model: "MultiExitClassifier", texts: Sequence[str], labels: Sequence[str] | Tensor,
              text_pairs: Sequence[str] | None = None, *, target_speedup: float | None = None,
              max_accuracy_drop: float | None = None, policies: Sequence[str] | None = None,
              batch_size: int = 32, grid_points: int = 41) -> dict[str, KnobPoint]:
    """Chooses each policy's knob on dev and stores it in ``model.config.default_knobs``.

    Returns the chosen point per policy. Without an exit table, the geep policies are skipped. Every policy is
    checked before anything is stored, so an unreachable target changes nothing.
    """
    from geep.engine import label_ids

    if policies is None:
        policies = [p for p in CALIBRATED_POLICIES if model.exit_table is not None or not get_policy(p).needs_table]
    if not len(texts):
        raise GeepError("calibration needs labelled dev rows; got none")
    encoded = model.tokenize(list(texts), None if text_pairs is None else list(text_pairs))
    result = sweep(model, encoded, label_ids(model, labels), policies=policies, batch_size=batch_size,
                   grid_points=grid_points)
    chosen = {name: choose_knob(result.points[name], result.full.accuracy, target_speedup=target_speedup,
                                max_accuracy_drop=max_accuracy_drop) for name in policies}
    for name, point in chosen.items():
        model.config.default_knobs[name] = point.knob
    return chosen
