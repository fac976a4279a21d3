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
from geep.exit_table import exit_distribution
from geep.inference.offline import Answered, run_rows
from geep.inference.rows import Prepared
from geep.inference.runs import all_exit_logits
from geep.inference.spec import bind_policy, require_table, resolve_run
from geep.modeling.model import MultiExitClassifier
from geep.policies import get_policy
from geep.runtime.flops import FlopsCount, FlopsSpec
from geep.runtime.replay import ReplayBackend
from geep.tasks import Task
from geep.tokens import Encoded

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class KnobPoint:
    """One knob of one policy, scored on dev. flops_speedup vs the ``full`` policy.

    ``metric`` names the task's primary metric (``geep.tasks``: accuracy, micro_f1, pearson) and ``score`` is its
    value, what calibration's budget and the bench's frontier read (larger is better); ``accuracy`` in [0, 1] stays
    accuracy (a classifier's: equal to ``score``; multi-label: subset accuracy; None for regression);
    ``metrics``: every metric the task reports.
    """

    policy: str
    knob: float | None
    accuracy: float | None
    flops_speedup: float
    mean_exit_layer: float
    macro_f1: float | None = 0.0  # None for a task without one (regression)
    exit_histogram: dict[int, int] = field(default_factory=dict)
    metric: str = "accuracy"
    score: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.score is None:
            object.__setattr__(self, "score", self.accuracy)


def choose_knob(points: list[KnobPoint], full_accuracy: float, *, target_speedup: float | None = None,
                max_accuracy_drop: float | None = None) -> KnobPoint:
    """The knob that meets the target, from the points of ONE policy.

    ``target_speedup`` X: among knobs whose FLOPs speed-up is at least X, the most accurate (ties: the faster).
    ``max_accuracy_drop`` D (points): among knobs whose score is at least full's minus D, the fastest (ties: the
    more accurate). The score is the task's primary metric (``KnobPoint.score``: accuracy for a classifier) and
    ``full_accuracy`` full's. An unreachable target raises GeepError naming the best reachable value.
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
        return max(ok, key=lambda p: (p.score, p.flops_speedup))
    floor = full_accuracy - max_accuracy_drop / 100.0
    ok = [p for p in points if p.score >= floor - 1e-12]
    if not ok:
        best = max(p.score for p in points)
        raise GeepError(f"{policy}: {_drop(points[0].metric)} of at most {max_accuracy_drop:g} points is unreachable "
                        f"on dev; the smallest reachable drop is {100 * (full_accuracy - best):.2f} points")
    return max(ok, key=lambda p: (p.flops_speedup, p.score))


def _drop(metric: str) -> str:
    return "an accuracy drop" if metric == "accuracy" else f"a {metric.replace('_', '-')} drop"


def choose_policy(chosen: Mapping[str, KnobPoint], *, target_speedup: float | None = None,
                  max_accuracy_drop: float | None = None) -> str:
    """The policy to run by default, among policies each at the knob :func:`choose_knob` chose for the same
    target: with ``max_accuracy_drop`` the fastest (FLOPs; ties: the more accurate), with ``target_speedup`` the most
    accurate (ties: the faster); a tie in both keeps the first in ``chosen``'s order."""
    if not chosen:
        raise GeepError("nothing to choose from: no calibrated policy")
    if max_accuracy_drop is not None:
        return max(chosen, key=lambda name: (chosen[name].flops_speedup, chosen[name].score))
    return max(chosen, key=lambda name: (chosen[name].score, chosen[name].flops_speedup))


@dataclass
class Sweep:
    """Every policy's knobs scored from one all-exits pass. ``full``: the full model's point."""

    full: KnobPoint
    points: dict[str, list[KnobPoint]]
    full_flops: int


def _score(policy: str, knob: Any, predictions: Tensor, layers: Tensor, labels: Tensor, exit_layers: Sequence[int],
           flops: int, full_flops: int, task: Task) -> KnobPoint:
    """Scores rows whose answers are ``predictions`` (``geep.inference.rows.answers``), given at exit ``layers``
    (N,), against the task's targets ``labels``."""
    histogram = {int(k): int((layers == k).sum()) for k in exit_layers}
    metrics = task.metrics(predictions, labels)
    return KnobPoint(policy, knob, metrics.get("accuracy"), full_flops / max(flops, 1), float(layers.float().mean()),
                     metrics.get("macro_f1"), histogram, task.primary, metrics[task.primary], metrics)


def replay_answers(model: MultiExitClassifier, exit_logits: Tensor, encoded: Encoded, policy: str, knob: Any, *,
                   batch_size: int, labels: Tensor | None = None, distribution: Tensor | None = None
                   ) -> tuple[Answered, FlopsCount]:
    """One knob of one policy run by the real scheduler on recorded outputs (``ReplayBackend``): every row's answer
    (probabilities, predictions, exit layers, in input order) and the FLOPs the same run on the model counts.

    ``knob`` as the user gives it: this is a run of its own, resolved here (``resolve_run``); ``distribution``
    (N, L): the rows' predicted exit distributions, for policies that predict layers (default: looked up in the
    model's table).
    """
    spec = resolve_run(model, policy, knob, batch_size=batch_size)
    predicted = None
    if spec.policy.predicts_layers:
        if distribution is None:
            distribution = exit_distribution(require_table(model), encoded, model.pad_token_id)
        predicted = spec.policy.predict_layers(distribution, spec.knob, model.exit_layers).tolist()
    backend = ReplayBackend(exit_logits, model.exit_layers, model.num_layers)
    flops = FlopsCount(FlopsSpec.from_model(model))
    answered = run_rows(backend, spec, Prepared(encoded, predicted),
                        labels=labels if spec.policy.needs_labels else None, flops=flops)
    return answered, flops


def replay(model: MultiExitClassifier, exit_logits: Tensor, encoded: Encoded, policy: str, knob: Any, *,
           batch_size: int, labels: Tensor | None = None, distribution: Tensor | None = None
           ) -> tuple[Tensor, Tensor, FlopsCount]:
    """:func:`replay_answers` as probabilities (N, C), exit layers (N,) and the FLOPs."""
    answered, flops = replay_answers(model, exit_logits, encoded, policy, knob, batch_size=batch_size, labels=labels,
                                     distribution=distribution)
    return answered.probabilities, answered.exit_layer, flops


def sweep(model: MultiExitClassifier, encoded: Encoded, labels: Tensor, *, policies: Sequence[str],
          batch_size: int = 32, grid_points: int = 21, exit_logits: Tensor | None = None,
          precision: str = "fp32", knobs: Mapping[str, Sequence[Any]] | None = None) -> Sweep:
    """The task's metrics (a classifier's accuracy and macro-F1), mean exit layer, exit histogram and FLOPs speed-up
    of every knob of every policy. ``labels``: the task's targets (``geep.inference.label_ids``).

    One all-exits pass at ``precision`` gives every exit's logits for every row (pass ``exit_logits`` (N, |E|, C)
    to reuse one); each knob is then run by the real scheduler on those logits (:func:`replay`), at ``batch_size``.
    The knobs of a policy are its grid of ``grid_points`` (``Policy.grid``; geep-verify's: (tau, t) pairs), or
    those ``knobs`` names for it.
    """
    E, C = model.exit_layers, model.config.num_labels
    task = model.task
    if exit_logits is None:
        exit_logits = all_exit_logits(model, encoded, batch_size=batch_size, precision=precision).logits
    exit_logits = exit_logits.cpu()
    labels = labels.cpu() if task.name != "classification" else labels.long().cpu()

    def score(name: str, knob: Any, distribution: Tensor | None) -> KnobPoint:
        answered, flops = replay_answers(model, exit_logits, encoded, name, knob, batch_size=batch_size,
                                         labels=labels, distribution=distribution)
        return _score(name, knob, answered.predictions, answered.exit_layer, labels, E, flops.total, full_flops, task)

    answered, flops = replay_answers(model, exit_logits, encoded, "full", None, batch_size=batch_size)
    full_flops = flops.total
    full = _score("full", None, answered.predictions, answered.exit_layer, labels, E, full_flops, full_flops, task)
    distribution = None
    if any(get_policy(name).predicts_layers for name in policies):
        distribution = exit_distribution(require_table(model), encoded, model.pad_token_id).cpu()
    knobs = knobs or {}
    points = {name: [score(name, knob, distribution)
                     for knob in knobs.get(name) or bind_policy(model, get_policy(name)).grid(C, len(E), grid_points)]
              for name in policies}
    return Sweep(full, points, full_flops)
