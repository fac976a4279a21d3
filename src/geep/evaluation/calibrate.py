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
from geep.inference.inputs import as_texts, check_lengths, label_ids
from geep.evaluation.temperature import fit_temperature
from geep.inference.runs import all_exit_logits
from geep.inference.spec import policy_for
from geep.modeling.cascade import Cascade
from geep.modeling.model import MultiExitClassifier
from geep.policies import get_policy

logger = logging.getLogger(__name__)

# Policies a model stores a default knob for (oracle needs labels; full has no knob).
CALIBRATED_POLICIES = ("fastbert", "deebert", "confidence", "pabee", "geep", "geep-verify")


# A cascade's (geep.policies.cascade): its rule with full members, and with members that exit early.
CASCADE_POLICIES = ("cascade", "cascade-fastbert", "cascade-deebert", "cascade-confidence", "cascade-pabee")


def calibrated_policies(model: MultiExitClassifier | Cascade) -> list[str]:
    """The policies ``calibrate`` stores a knob for by default: those of :data:`CALIBRATED_POLICIES` the model can run
    (the geep ones need an exit table); for a cascade ``cascade``, and the member policies when a member has more
    than one exit."""
    if isinstance(model, Cascade):
        early = any(len(member.exit_layers) > 1 for member in model.members)
        return list(CASCADE_POLICIES if early else CASCADE_POLICIES[:1])
    return [p for p in CALIBRATED_POLICIES if model.exit_table is not None or not get_policy(p).needs_table]


def cascade_temperatures(model: Cascade, exit_logits: Tensor, labels: Tensor) -> list[float]:
    """Each boundary member's temperature (Guo et al. 2017) fitted on the rows' logits at its last exit, from the
    cascade's all-exits logits (N, |E|, C)."""
    index = {k: i for i, k in enumerate(model.exit_layers)}
    temperatures = [fit_temperature(exit_logits[:, index[b]], labels) for b in model.boundaries]
    logger.info("cascade temperatures (member boundaries %s): %s", model.boundaries,
                ", ".join(f"{t:.3f}" for t in temperatures))
    return temperatures


def calibrate(model: MultiExitClassifier | Cascade, texts: Sequence[str], labels: Sequence[str] | Tensor,
              text_pairs: Sequence[str] | None = None, *, target_speedup: float | None = None,
              max_accuracy_drop: float | None = None, policies: Sequence[str] | None = None,
              batch_size: int = 32, grid_points: int = 41, precision: str = "fp32") -> dict[str, KnobPoint]:
    """Chooses each policy's knob on dev and stores it in ``model.config.default_knobs`` under ``precision``, and
    the policy predict and serve run by default (``model.config.default_policy``): of the policies calibrated here,
    the fastest that meets ``max_accuracy_drop``, or the most accurate that meets ``target_speedup``
    (:func:`geep.evaluation.sweep.choose_policy`). geep-verify's knob is the pair (tau, t), searched over tau x every
    fastbert t.

    Returns the chosen point per policy. Without an exit table, the geep policies are skipped. A cascade first fits
    each boundary member's temperature on dev (stored per precision with the knobs); its knob is one threshold per
    member boundary (and its member policy's knob), chosen under the same rule against its last member alone. Every policy is
    checked before anything is stored, so an unreachable target changes nothing. The all-exits pass runs at
    ``precision`` (int8 confidences differ from fp32's); the other precisions' knobs stay as they are.
    """
    if policies is None:
        policies = calibrated_policies(model)
    texts = as_texts(texts)
    if not texts:
        raise GeepError("calibration needs labelled dev rows; got none")
    check_lengths(texts, labels, text_pairs)
    encoded = model.tokenize(texts, None if text_pairs is None else as_texts(text_pairs, "text_pairs"))
    ids = label_ids(model, labels)
    exit_logits, kept = None, None
    if isinstance(model, Cascade):  # each boundary member's temperature first: the thresholds are on its scale
        exit_logits = all_exit_logits(model, encoded, batch_size=batch_size, precision=precision).logits
        kept = dict(model.config.temperatures)
        model.config.temperatures[precision] = cascade_temperatures(model, exit_logits, ids)
    try:
        result = sweep(model, encoded, ids, policies=policies, batch_size=batch_size, grid_points=grid_points,
                       precision=precision, exit_logits=exit_logits)
        chosen = {name: choose_knob(result.points[name], result.full.accuracy, target_speedup=target_speedup,
                                    max_accuracy_drop=max_accuracy_drop) for name in policies}
    except BaseException:
        if kept is not None:
            model.config.temperatures = kept  # an unreachable target changes nothing
        raise
    for name, point in chosen.items():
        model.config.store_knob(precision, name, policy_for(model, name, precision).knob_values(point.knob))
    default = choose_policy(chosen, target_speedup=target_speedup, max_accuracy_drop=max_accuracy_drop)
    model.config.store_policy(precision, default)
    logger.info("default policy at %s: %s", precision, default)
    return chosen
