"""Scoring every knob of every policy on labelled rows from ONE pass over the model.

The all-exits pass records every exit's logits for every row (a row's outputs do not depend on its batch). Each
knob is then run by the real scheduler and executor on a backend that serves those logits
(``geep.runtime.replay``): the exits, the answers and the FLOPs are those the same run on the model gives, and no
second copy of any schedule exists. :func:`choose_knob` picks the knob that meets a speed or accuracy target.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from geep.errors import GeepError
from geep.evaluation.metrics import macro_f1
from geep.exit_table import exit_distribution
from geep.inference.offline import run_rows
from geep.inference.rows import Prepared
from geep.inference.runs import all_exit_logits
from geep.inference.spec import policy_for, require_table, resolve_run
from geep.modeling.cascade import Cascade
from geep.modeling.model import MultiExitClassifier
from geep.runtime.flops import FlopsCount, FlopsSpec
from geep.runtime.replay import ReplayBackend
from geep.tokens import Encoded

logger = logging.getLogger(__name__)

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


def choose_policy(chosen: Mapping[str, KnobPoint], *, target_speedup: float | None = None,
                  max_accuracy_drop: float | None = None) -> str:
    """The policy to run by default, among policies each at the knob :func:`choose_knob` chose for the same
    target: with ``max_accuracy_drop`` the fastest (FLOPs; ties: the more accurate), with ``target_speedup`` the most
    accurate (ties: the faster); a tie in both keeps the first in ``chosen``'s order."""
    if not chosen:
        raise GeepError("nothing to choose from: no calibrated policy")
    if max_accuracy_drop is not None:
        return max(chosen, key=lambda name: (chosen[name].flops_speedup, chosen[name].accuracy))
    return max(chosen, key=lambda name: (chosen[name].accuracy, chosen[name].flops_speedup))


@dataclass
class Sweep:
    """Every policy's knobs scored from one all-exits pass. ``full``: the full model's point."""

    full: KnobPoint
    points: dict[str, list[KnobPoint]]
    full_flops: int


def _score(policy: str, knob: Any, probabilities: Tensor, layers: Tensor, labels: Tensor,
           exit_layers: Sequence[int], flops: int, full_flops: int) -> KnobPoint:
    """Scores rows whose answers are ``probabilities`` (N, C), given at exit ``layers`` (N,)."""
    predictions = probabilities.argmax(-1)  # (N,)
    histogram = {int(k): int((layers == k).sum()) for k in exit_layers}
    return KnobPoint(policy, knob, float((predictions == labels).double().mean()), full_flops / max(flops, 1),
                     float(layers.float().mean()), macro_f1(predictions, labels, probabilities.shape[-1]), histogram)


def replay(model: MultiExitClassifier | Cascade, exit_logits: Tensor, encoded: Encoded, policy: str, knob: Any, *,
           batch_size: int, labels: Tensor | None = None, distribution: Tensor | None = None,
           precision: str = "fp32") -> tuple[Tensor, Tensor, FlopsCount]:
    """One knob of one policy run by the real scheduler on recorded logits (``ReplayBackend``): probabilities (N, C)
    and exit layers (N,) in input order, and the FLOPs the same run on the model counts.

    ``knob`` as the user gives it: this is a run of its own, resolved here (``resolve_run``); ``distribution``
    (N, L): the rows' predicted exit distributions, for policies that predict layers (default: looked up in the
    model's table). ``precision``: what the logits were recorded at (a cascade's temperatures are calibrated per
    precision).
    """
    spec = resolve_run(model, policy, knob, batch_size=batch_size, precision=precision)
    predicted = None
    if spec.policy.predicts_layers:
        if distribution is None:
            distribution = exit_distribution(require_table(model), encoded, model.pad_token_id)
        predicted = spec.policy.predict_layers(distribution, spec.knob, model.exit_layers).tolist()
    backend = ReplayBackend(exit_logits, model.exit_layers, model.num_layers)
    flops = FlopsCount(FlopsSpec.from_model(model))
    answered = run_rows(backend, spec, Prepared(encoded, predicted),
                        labels=labels if spec.policy.needs_labels else None, flops=flops)
    return answered.probabilities, answered.exit_layer, flops


def sweep(model: MultiExitClassifier, encoded: Encoded, labels: Tensor, *, policies: Sequence[str],
          batch_size: int = 32, grid_points: int = 21, exit_logits: Tensor | None = None,
          precision: str = "fp32", knobs: Mapping[str, Sequence[Any]] | None = None) -> Sweep:
    """Accuracy, macro-F1, mean exit layer, exit histogram and FLOPs speed-up of every knob of every policy.

    One all-exits pass at ``precision`` gives every exit's logits for every row (pass ``exit_logits`` (N, |E|, C)
    to reuse one); each knob is then run by the real scheduler on those logits (:func:`replay`), at ``batch_size``.
    The knobs of a policy are its grid of ``grid_points`` (``Policy.grid``; geep-verify's: (tau, t) pairs), or
    those ``knobs`` names for it. For a cascade, ``full`` is its last member run alone (the model it saves against:
    every speed-up is over that) and ``cascade`` its rule with full members (``geep.policies.cascade``).
    """
    E, C = model.exit_layers, model.config.num_labels
    if exit_logits is None:
        exit_logits = all_exit_logits(model, encoded, batch_size=batch_size, precision=precision).logits
    exit_logits = exit_logits.cpu()
    labels = labels.long().cpu()

    def score(name: str, knob: Any, distribution: Tensor | None) -> KnobPoint:
        if name == "full" and isinstance(model, Cascade):
            return full  # a cascade's full: its last member alone (below)
        probabilities, layers, flops = replay(model, exit_logits, encoded, name, knob, batch_size=batch_size,
                                              labels=labels, distribution=distribution, precision=precision)
        return _score(name, knob, probabilities, layers, labels, E, flops.total, full_flops)

    reference, reference_logits = model, exit_logits
    if isinstance(model, Cascade):  # what the cascade saves against: its last member run alone
        reference = model.members[-1]
        reference_logits = exit_logits[:, [i for i, k in enumerate(E) if k > model.offsets[-1]]]
    probabilities, layers, flops = replay(reference, reference_logits, encoded, "full", None, batch_size=batch_size,
                                          precision=precision)
    full_flops = flops.total
    full = _score("full", None, probabilities, layers, labels, reference.exit_layers, full_flops, full_flops)
    distribution = None
    if any(policy_for(model, name).predicts_layers for name in policies):
        distribution = exit_distribution(require_table(model), encoded, model.pad_token_id).cpu()
    knobs = knobs or {}
    points = {name: [score(name, knob, distribution)
                     for knob in knobs.get(name) or policy_for(model, name, precision).grid(C, len(E), grid_points)]
              for name in policies}
    return Sweep(full, points, full_flops)
