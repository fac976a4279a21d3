"""Scoring every knob of every policy on labelled rows from ONE pass over the model.

The all-exits pass records every exit's logits for every row (a row's outputs do not depend on its batch). Each
knob is then run by the real scheduler and executor on a backend that serves those logits
(``geep.runtime.replay``): the exits, the answers and the FLOPs are those the same run on the model gives, and no
second copy of any schedule exists. :func:`choose_knob` picks the knob that meets a speed or accuracy target with
stated confidence (:mod:`geep.evaluation.bounds`), :func:`choose_policy` the policy run by default.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from torch import Tensor

from geep.errors import GeepError
from geep.evaluation.bounds import DEFAULT_CONFIDENCE, check_confidence, drop_upper_bound, fixed_sequence
from geep.exit_table import exit_distribution
from geep.inference.offline import Answered, run_rows
from geep.inference.rows import Prepared
from geep.inference.runs import all_exit_logits
from geep.inference.spec import policy_for, require_table, resolve_run
from geep.modeling.cascade import Cascade
from geep.modeling.model import MultiExitClassifier
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

    ``lost``: dev rows ``full`` labels right and this knob wrong; ``gained``: the reverse; ``rows``: dev rows (the
    paired counts the drop bound reads, :mod:`geep.evaluation.bounds`; a classifier's only: 0 rows for a task whose
    metric is not a mean of right rows). :func:`choose_knob` fills the last three for the knob it chooses:
    ``confidence`` (None: chosen by the point estimate), ``drop_bound`` (the upper bound on the accuracy drop
    against ``full``, in points) and ``promised`` (False: no knob faster than full met the budget with that
    confidence, and this is the fallback).
    """

    policy: str
    knob: Any
    accuracy: float | None
    flops_speedup: float
    mean_exit_layer: float
    macro_f1: float | None = 0.0  # None for a task without one (regression)
    exit_histogram: dict[int, int] = field(default_factory=dict)
    metric: str = "accuracy"
    score: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    lost: int = 0
    gained: int = 0
    rows: int = 0
    confidence: float | None = None
    drop_bound: float | None = None
    promised: bool | None = None

    def __post_init__(self) -> None:
        if self.score is None:
            object.__setattr__(self, "score", self.accuracy)

    def bound(self, confidence: float) -> float:
        """The upper bound on this knob's accuracy drop against ``full`` at ``confidence``, in points."""
        if self.rows <= 0:
            raise GeepError(f"{self.policy}: a knob scored without its paired dev counts has no bound")
        return 100.0 * drop_upper_bound(self.lost, self.gained, self.rows, confidence)


def slowest_first(points: Sequence[KnobPoint]) -> list[KnobPoint]:
    """The points in the fixed order the fixed-sequence test walks: FLOPs speed-up on dev, slowest first (ties: the
    deeper mean exit layer first, then the grid's order). It reads the dev inputs' exits, never the labels."""
    order = sorted(range(len(points)), key=lambda i: (points[i].flops_speedup, -points[i].mean_exit_layer, i))
    return [points[i] for i in order]


def choose_knob(points: list[KnobPoint], full_accuracy: float, *, target_speedup: float | None = None,
                max_accuracy_drop: float | None = None, confidence: float | None = DEFAULT_CONFIDENCE
                ) -> KnobPoint:
    """The knob that meets the target, from the points of ONE policy, with its bound filled in.

    ``max_accuracy_drop`` D (points): the fastest knob certified by the fixed-sequence test at ``confidence``
    (:mod:`geep.evaluation.bounds`): knobs are taken slowest first (:func:`slowest_first`) and pass while the upper
    bound on their drop against ``full`` is at most D; the fastest that passed is chosen (ties: the smaller bound),
    ``promised=True``. When no knob faster than full passes, the dev set is too small to promise D at that
    confidence: the knob returned is the most accurate one still faster than full -- the smallest bound, ties: the
    faster -- with ``promised=False`` (calibration stores it, marked, so that predict runs the safest knob rather than
    the policy's uncalibrated default; the caller says so in one line). Never an error.

    ``target_speedup`` X: among knobs whose FLOPs speed-up is at least X (label-free; none -> GeepError naming the
    best reachable), the one with the smallest upper bound on its drop, each of the m candidates bounded at
    confidence 1 - (1 - ``confidence``) / m (Bonferroni), so the stored bound holds for the knob chosen whichever
    it is (ties: the faster).

    ``confidence=None``: the point estimate (``auto_build_threshold``'s S, and a task whose metric is not a mean
    of right rows: micro-F1, Pearson): among knobs whose score (``KnobPoint.score``, the task's primary metric) is
    at least full's (``full_accuracy``) minus D, the fastest (ties: the better score); with X, the best score (ties:
    the faster); an unreachable D raises GeepError naming the smallest reachable drop.
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
        if confidence is None:
            return replace(max(ok, key=lambda p: (p.score, p.flops_speedup)), promised=True)
        confidence = check_confidence(confidence)
        each = 1.0 - (1.0 - confidence) / len(ok)
        bounds = {id(p): p.bound(each) for p in ok}
        best = min(ok, key=lambda p: (bounds[id(p)], -p.flops_speedup))
        return replace(best, confidence=confidence, drop_bound=bounds[id(best)], promised=True)
    if confidence is None:
        floor = full_accuracy - max_accuracy_drop / 100.0
        ok = [p for p in points if p.score >= floor - 1e-12]
        if not ok:
            best = max(p.score for p in points)
            raise GeepError(f"{policy}: {_drop(points[0].metric)} of at most {max_accuracy_drop:g} points is "
                            f"unreachable on dev; the smallest reachable drop is {100 * (full_accuracy - best):.2f} "
                            "points")
        return replace(max(ok, key=lambda p: (p.flops_speedup, p.score)), promised=True)
    confidence = check_confidence(confidence)
    ordered = slowest_first(points)
    bounds = [p.bound(confidence) for p in ordered]
    passed = fixed_sequence(bounds, max_accuracy_drop)
    faster = [(p, b) for p, b in zip(ordered[:passed], bounds[:passed]) if p.flops_speedup > 1.0]
    if faster:
        point, bound = max(faster, key=lambda pb: (pb[0].flops_speedup, -pb[1]))
        return replace(point, confidence=confidence, drop_bound=bound, promised=True)
    candidates = [(p, b) for p, b in zip(ordered, bounds) if p.flops_speedup > 1.0] or list(zip(ordered, bounds))
    point, bound = min(candidates, key=lambda pb: (pb[1], -pb[0].flops_speedup))
    return replace(point, confidence=confidence, drop_bound=bound, promised=False)


def _drop(metric: str) -> str:
    return "an accuracy drop" if metric == "accuracy" else f"a {metric.replace('_', '-')} drop"


def choose_policy(chosen: Mapping[str, KnobPoint], *, target_speedup: float | None = None,
                  max_accuracy_drop: float | None = None) -> str:
    """The policy to run by default, among policies each at the knob :func:`choose_knob` chose for the same target.

    With ``max_accuracy_drop``: only policies whose knob was promised (passed its bound) compete; the fastest
    (FLOPs; ties: the smaller bound, then the more accurate). When none was promised, ``full``: nothing faster was
    shown to keep the budget, so the default stays the full model. With ``target_speedup``: the smallest bound on
    the drop (a knob chosen by the point estimate: the most accurate; ties: the faster). A tie in everything keeps
    the first in ``chosen``'s order.
    """
    if not chosen:
        raise GeepError("nothing to choose from: no calibrated policy")

    def bound(name: str) -> float:
        point = chosen[name]
        return point.drop_bound if point.drop_bound is not None else 100.0 * (1.0 - point.score)

    if max_accuracy_drop is not None:
        kept = [name for name in chosen if chosen[name].promised is not False]
        if not kept:
            return "full"
        return max(kept, key=lambda name: (chosen[name].flops_speedup, -bound(name), chosen[name].score))
    return min(chosen, key=lambda name: (bound(name), -chosen[name].flops_speedup))


@dataclass
class Sweep:
    """Every policy's knobs scored from one all-exits pass. ``full``: the full model's point."""

    full: KnobPoint
    points: dict[str, list[KnobPoint]]
    full_flops: int


def _score(policy: str, knob: Any, predictions: Tensor, layers: Tensor, labels: Tensor, exit_layers: Sequence[int],
           flops: int, full_flops: int, task: Task, full_right: Tensor | None = None) -> KnobPoint:
    """Scores rows whose answers are ``predictions`` (``geep.inference.rows.answers``), given at exit ``layers``
    (N,), against the task's targets ``labels``. A classifier's rows are also paired with ``full``'s: ``full_right``
    (N,) bool, which rows ``full`` labels right (None: these are full's own answers)."""
    histogram = {int(k): int((layers == k).sum()) for k in exit_layers}
    metrics = task.metrics(predictions, labels)
    paired = {}
    if task.primary == "accuracy":
        right = predictions == labels  # (N,)
        full_right = right if full_right is None else full_right
        paired = dict(lost=int((full_right & ~right).sum()), gained=int((right & ~full_right).sum()),
                      rows=int(labels.numel()))
    return KnobPoint(policy, knob, metrics.get("accuracy"), full_flops / max(flops, 1), float(layers.float().mean()),
                     metrics.get("macro_f1"), histogram, task.primary, metrics[task.primary], metrics, **paired)


def replay_answers(model: MultiExitClassifier | Cascade, exit_logits: Tensor, encoded: Encoded, policy: str,
                   knob: Any, *, batch_size: int, labels: Tensor | None = None, distribution: Tensor | None = None,
                   precision: str = "fp32") -> tuple[Answered, FlopsCount]:
    """One knob of one policy run by the real scheduler on recorded outputs (``ReplayBackend``): every row's answer
    (probabilities, predictions, exit layers, in input order) and the FLOPs the same run on the model counts.

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
    return answered, flops


def replay(model: MultiExitClassifier | Cascade, exit_logits: Tensor, encoded: Encoded, policy: str, knob: Any, *,
           batch_size: int, labels: Tensor | None = None, distribution: Tensor | None = None,
           precision: str = "fp32") -> tuple[Tensor, Tensor, FlopsCount]:
    """:func:`replay_answers` as probabilities (N, C), exit layers (N,) and the FLOPs."""
    answered, flops = replay_answers(model, exit_logits, encoded, policy, knob, batch_size=batch_size, labels=labels,
                                     distribution=distribution, precision=precision)
    return answered.probabilities, answered.exit_layer, flops


def sweep(model: MultiExitClassifier, encoded: Encoded, labels: Tensor, *, policies: Sequence[str],
          batch_size: int = 32, grid_points: int = 21, exit_logits: Tensor | None = None,
          precision: str = "fp32", knobs: Mapping[str, Sequence[Any]] | None = None) -> Sweep:
    """The task's metrics (a classifier's accuracy and macro-F1), mean exit layer, exit histogram, FLOPs speed-up
    and, for a classifier, the rows lost and gained against ``full`` (:class:`KnobPoint`) of every knob of every
    policy. ``labels``: the task's targets (``geep.inference.label_ids``).

    One all-exits pass at ``precision`` gives every exit's logits for every row (pass ``exit_logits`` (N, |E|, C)
    to reuse one); each knob is then run by the real scheduler on those logits (:func:`replay`), at ``batch_size``.
    The knobs of a policy are its grid of ``grid_points`` (``Policy.grid``; geep-verify's: (tau, t) pairs), or
    those ``knobs`` names for it. For a cascade, ``full`` is its last member run alone (the model it saves against:
    every speed-up is over that) and ``cascade`` its rule with full members (``geep.policies.cascade``).
    """
    E, C = model.exit_layers, model.config.num_labels
    task = model.task
    if exit_logits is None:
        exit_logits = all_exit_logits(model, encoded, batch_size=batch_size, precision=precision).logits
    exit_logits = exit_logits.cpu()
    labels = labels.cpu() if task.name != "classification" else labels.long().cpu()

    def score(name: str, knob: Any, distribution: Tensor | None) -> KnobPoint:
        if name == "full" and isinstance(model, Cascade):
            return full  # a cascade's full: its last member alone (below)
        answered, flops = replay_answers(model, exit_logits, encoded, name, knob, batch_size=batch_size,
                                         labels=labels, distribution=distribution, precision=precision)
        return _score(name, knob, answered.predictions, answered.exit_layer, labels, E, flops.total, full_flops, task,
                      full_right)

    reference, reference_logits = model, exit_logits
    if isinstance(model, Cascade):  # what the cascade saves against: its last member run alone
        reference = model.members[-1]
        reference_logits = exit_logits[:, [i for i, k in enumerate(E) if k > model.offsets[-1]]]
    answered, flops = replay_answers(reference, reference_logits, encoded, "full", None, batch_size=batch_size,
                                     precision=precision)
    full_flops = flops.total
    full = _score("full", None, answered.predictions, answered.exit_layer, labels, reference.exit_layers, full_flops,
                  full_flops, task)
    full_right = answered.predictions == labels if task.primary == "accuracy" else None  # (N,)
    distribution = None
    if any(policy_for(model, name).predicts_layers for name in policies):
        distribution = exit_distribution(require_table(model), encoded, model.pad_token_id).cpu()
    knobs = knobs or {}
    points = {name: [score(name, knob, distribution)
                     for knob in knobs.get(name) or policy_for(model, name, precision).grid(C, len(E), grid_points)]
              for name in policies}
    return Sweep(full, points, full_flops)
