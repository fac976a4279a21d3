"""Calibration: choose each policy's knob on dev and store it as the model's default, and the default policy.

Every knob of every policy is scored on dev from one all-exits pass (``geep.evaluation.sweep``); per policy the knob
that meets the target is stored in ``model.config.default_knobs`` (named values, per precision and policy), which
predict then uses; the policy that meets it best is stored in ``model.config.default_policy`` (per precision).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from torch import Tensor

from geep.errors import GeepError
from geep.evaluation.sweep import KnobPoint, choose_knob, choose_policy, sweep
from geep.inference.inputs import as_texts, label_ids
from geep.modeling.model import MultiExitClassifier
from geep.policies import get_policy, policies_for

logger = logging.getLogger(__name__)

# Policies a model stores a default knob for (oracle needs labels; full has no knob); each model calibrates those
# that apply to its task (and lte where it has the exit module): ``calibrated_policies``.
CALIBRATED_POLICIES = ("fastbert", "deebert", "confidence", "pabee", "geep", "geep-verify", "elbert", "vote", "lte",
                       "margin")


def calibrated_policies(model: MultiExitClassifier) -> list[str]:
    """The policies calibrated by default: those of :data:`CALIBRATED_POLICIES` the model's task can run (``lte``
    with an exit module), the geep ones only with an exit table."""
    usable = policies_for(model.config.task, signal=model.config.exit_module is not None)
    return [p for p in CALIBRATED_POLICIES if p in usable and (model.exit_table is not None
                                                             or not get_policy(p).needs_table)]


def calibrate(model: MultiExitClassifier, texts: Sequence[str], labels: Sequence[str] | Tensor,
              text_pairs: Sequence[str] | None = None, *, target_speedup: float | None = None,
              max_accuracy_drop: float | None = None, policies: Sequence[str] | None = None,
              batch_size: int = 32, grid_points: int = 41, precision: str = "fp32") -> dict[str, KnobPoint]:
    """Chooses each policy's knob on dev and stores it in ``model.config.default_knobs`` under ``precision``, and
    the policy predict and serve run by default (``model.config.default_policy``): of the policies calibrated here,
    the fastest that meets ``max_accuracy_drop``, or the most accurate that meets ``target_speedup``
    (:func:`geep.evaluation.sweep.choose_policy`). geep-verify's knob is the pair (tau, t), searched over tau x every
    fastbert t.

    The budget is in the task's primary metric (``KnobPoint.score``: accuracy for a classifier, micro-F1 for
    multi-label, Pearson for regression): ``max_accuracy_drop`` is points of it. Returns the chosen point per policy.
    Without an exit table, the geep policies are skipped. Every policy is
    checked before anything is stored, so an unreachable target changes nothing. The all-exits pass runs at
    ``precision`` (int8 confidences differ from fp32's); the other precisions' knobs stay as they are.
    """
    if policies is None:
        policies = calibrated_policies(model)
    texts = as_texts(texts)
    if not texts:
        raise GeepError("calibration needs labelled dev rows; got none")
    encoded = model.tokenize(texts, None if text_pairs is None else as_texts(text_pairs, "text_pairs"))
    result = sweep(model, encoded, label_ids(model, labels), policies=policies, batch_size=batch_size,
                   grid_points=grid_points, precision=precision)
    chosen = {name: choose_knob(result.points[name], result.full.score, target_speedup=target_speedup,
                                max_accuracy_drop=max_accuracy_drop) for name in policies}
    for name, point in chosen.items():
        model.config.store_knob(precision, name, get_policy(name).knob_values(point.knob))
    default = choose_policy(chosen, target_speedup=target_speedup, max_accuracy_drop=max_accuracy_drop)
    model.config.store_policy(precision, default)
    logger.info("default policy at %s: %s", precision, default)
    return chosen
