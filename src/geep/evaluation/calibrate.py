"""Calibration: fit each exit's temperature, choose each policy's knob on dev and store it as the model's default,
and the default policy.

Every knob of every policy is scored on dev from one all-exits pass (``geep.evaluation.sweep``); per policy the knob
that meets the target with stated confidence (``geep.evaluation.bounds``: an upper bound on its accuracy drop
against ``full``, knobs tested slowest first) is stored in ``model.config.default_knobs`` (named values, per
precision and policy), which predict then uses, with its evidence beside it in ``model.config.calibration``; the
policy that meets it best is stored in ``model.config.default_policy`` (per precision).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from torch import Tensor

from geep.errors import GeepError
from geep.evaluation.bounds import DEFAULT_CONFIDENCE, check_confidence
from geep.evaluation.sweep import KnobPoint, choose_knob, choose_policy, sweep
from geep.evaluation.temperature import calibration_errors, exit_temperatures, fit_temperature
from geep.inference.inputs import as_texts, check_lengths, label_ids
from geep.inference.runs import all_exit_logits
from geep.inference.spec import policy_for, usable_policies
from geep.modeling.cascade import Cascade
from geep.modeling.model import MultiExitClassifier
from geep.policies import get_policy

logger = logging.getLogger(__name__)

# Policies a model stores a default knob for (oracle needs labels; full has no knob); each model calibrates those
# that apply to its task (and lte where it has the exit module): ``calibrated_policies``.
CALIBRATED_POLICIES = ("fastbert", "deebert", "confidence", "pabee", "geep", "geep-verify", "elbert", "vote", "lte",
                       "margin", "class-means", "trust-score", "ponder", "sentee")


# A cascade's (geep.policies.cascade): its rule with full members, and with members that exit early.
CASCADE_POLICIES = ("cascade", "cascade-fastbert", "cascade-deebert", "cascade-confidence", "cascade-pabee")


def calibrated_policies(model: MultiExitClassifier | Cascade) -> list[str]:
    """The policies ``calibrate`` stores a knob for by default: those of :data:`CALIBRATED_POLICIES` the model's task
    can run (``lte`` with an exit module, ``class-means`` and ``trust-score`` with their fitted statistics; the geep ones need an exit table); for a
    cascade ``cascade``, and the member policies when a member has more than one exit."""
    if isinstance(model, Cascade):
        early = any(len(member.exit_layers) > 1 for member in model.members)
        return list(CASCADE_POLICIES if early else CASCADE_POLICIES[:1])
    usable = usable_policies(model)
    return [p for p in CALIBRATED_POLICIES if p in usable and (model.exit_table is not None
                                                             or not get_policy(p).needs_table)]


def cascade_temperatures(model: Cascade, exit_logits: Tensor, labels: Tensor) -> list[float]:
    """Each boundary member's temperature (Guo et al. 2017) fitted on the rows' logits at its last exit, from the
    cascade's all-exits logits (N, |E|, C)."""
    index = {k: i for i, k in enumerate(model.exit_layers)}
    temperatures = [fit_temperature(exit_logits[:, index[b]], labels) for b in model.boundaries]
    logger.info("cascade temperatures (member boundaries %s): %s", model.boundaries,
                ", ".join(f"{t:.3f}" for t in temperatures))
    return temperatures


def fit_exit_temperatures(model: MultiExitClassifier, exit_logits: Tensor, labels: Tensor, precision: str) -> None:
    """Fits each exit's temperature (Guo et al. 2017, NLL) on the rows' logits at that exit (the task's columns of the
    all-exits logits (N, |E|, K + S)) and stores them at ``precision`` with each exit's ECE before and after."""
    scores = exit_logits[..., : model.config.num_outputs].cpu()  # (N, |E|, C)
    labels = labels.cpu()
    temperatures = exit_temperatures(scores, labels)
    model.config.temperatures[precision] = temperatures
    model.config.calibration_error[precision] = {
        "before": calibration_errors(scores, labels), "after": calibration_errors(scores, labels, temperatures),
        "dev_rows": int(labels.numel())}
    logger.info("exit temperatures at %s (exits %s): %s", precision, model.exit_layers,
                ", ".join(f"{t:.3f}" for t in temperatures))


def calibrate(model: MultiExitClassifier | Cascade, texts: Sequence[str], labels: Sequence[str] | Tensor,
              text_pairs: Sequence[str] | None = None, *, target_speedup: float | None = None,
              max_accuracy_drop: float | None = None, policies: Sequence[str] | None = None,
              batch_size: int = 32, grid_points: int = 41, precision: str = "fp32",
              confidence: float = DEFAULT_CONFIDENCE) -> dict[str, KnobPoint]:
    """Chooses each policy's knob on dev and stores it in ``model.config.default_knobs`` under ``precision``, and
    the policy predict and serve run by default (``model.config.default_policy``). geep-verify's knob is the pair
    (tau, t), searched over tau x every fastbert t.

    ``max_accuracy_drop`` D: per policy, the fastest knob whose drop against ``full`` is at most D points with
    probability ``confidence`` (:func:`geep.evaluation.sweep.choose_knob`: Tango's score bound on the paired
    drop, fixed-sequence testing from the slowest knob); the default policy is the fastest of the policies whose
    knob passed. A policy with no knob faster than full that passes stores its most accurate knob that is still
    faster than full, marked ``promised: false``; if no policy passed, the default policy is ``full``; either way one
    warning line says so. ``target_speedup`` X: per policy, among knobs at least X faster (FLOPs), the one with the
    smallest bound on its drop; the default policy is the one with the smallest bound.

    The budget is in the task's primary metric (``KnobPoint.score``): accuracy for a classifier, whose drop is
    bounded as above; micro-F1 (multi-label) and Pearson (regression) are not a mean of right rows, so the paired
    bound does not apply: their knobs are chosen by the dev point estimate, stored with ``confidence: null`` and
    one warning line says so.

    The P policies calibrated share the confidence (Bonferroni): each policy's knobs are tested at
    1 - (1 - ``confidence``) / P, so that every promised knob, and with them the default policy, holds at once with
    ``confidence`` (choosing the fastest of P policies that each passed at ``confidence`` would not).

    Beside each knob, ``model.config.calibration[precision][policy]`` records the confidence (and each policy's
    share, ``policy_confidence``, of the P ``policies``), the bound
    (``drop_bound``, points), the point estimate (``drop``, points), the dev rows, whether it was promised and the
    target. Returns the chosen point per policy (bound fields filled). Without an exit table, the geep policies
    are skipped. Every argument and policy is checked before anything is stored, so an unreachable speed-up
    changes nothing. The all-exits pass runs at ``precision`` (int8 confidences differ from fp32's); the other
    precisions' knobs stay as they are. A cascade first fits each boundary member's temperature on dev (stored per
    precision with the knobs); its knob is one threshold per member boundary (and its member policy's knob), chosen
    under the same rule against its last member alone.

    A classifier first fits each exit's temperature T_k on dev (NLL; :func:`fit_exit_temperatures`), stored at
    ``precision`` (``model.config.temperatures``) with each exit's ECE before and after; the knobs are then chosen on
    the calibrated signal of the policies that read it (``confidence``). The temperatures are fitted on the same dev
    labels the bound then tests, and the bound takes them as fixed: it does not account for that reuse (|E| scalars,
    each a monotone rescaling of one exit's scores), so a calibrated ``confidence`` knob's promise is slightly
    optimistic; the other policies read no temperature and are unaffected.
    """
    confidence = check_confidence(confidence)
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
    kept_temperatures = None
    if not isinstance(model, Cascade) and model.config.task == "classification":
        # each exit's temperature first: the knobs are chosen on the calibrated signal (confidence reads it)
        exit_logits = all_exit_logits(model, encoded, batch_size=batch_size, precision=precision).logits
        kept_temperatures = (dict(model.config.temperatures), dict(model.config.calibration_error))
        fit_exit_temperatures(model, exit_logits, ids, precision)
    bounded = model.task.primary == "accuracy"
    if not bounded:
        logger.warning("%s is not a mean of right rows, so no confidence bound applies: each knob is chosen by its "
                       "dev point estimate (stored with confidence null)", model.task.primary.replace("_", "-"))
    # Bonferroni over the P policies: each is tested at 1 - (1 - confidence) / P, so that every promised knob holds
    # at once with ``confidence``, and so does the default policy, whichever of them it is.
    each = 1.0 - (1.0 - confidence) / max(len(policies), 1)
    try:
        result = sweep(model, encoded, ids, policies=policies, batch_size=batch_size, grid_points=grid_points,
                       precision=precision, exit_logits=exit_logits)
        chosen = {name: choose_knob(result.points[name], result.full.score, target_speedup=target_speedup,
                                    max_accuracy_drop=max_accuracy_drop, confidence=each if bounded else None)
                  for name in policies}
    except BaseException:
        if kept is not None:
            model.config.temperatures = kept  # an unreachable target changes nothing
        if kept_temperatures is not None:
            model.config.temperatures, model.config.calibration_error = kept_temperatures
        raise
    target = ({"max_accuracy_drop": float(max_accuracy_drop)} if max_accuracy_drop is not None
              else {"target_speedup": float(target_speedup)})
    for name, point in chosen.items():
        evidence = {"confidence": confidence if bounded else None, "policy_confidence": each if bounded else None,
                    "policies": len(policies), "drop_bound": point.drop_bound,
                    "drop": 100.0 * (result.full.score - point.score), "metric": point.metric, "dev_rows": len(texts),
                    "promised": bool(point.promised), **target}
        model.config.store_knob(precision, name, policy_for(model, name, precision).knob_values(point.knob), evidence)
    default = choose_policy(chosen, target_speedup=target_speedup, max_accuracy_drop=max_accuracy_drop)
    model.config.store_policy(precision, default)
    unpromised = [name for name, point in chosen.items() if not point.promised]
    if unpromised:
        logger.warning("%d dev rows are too few to promise an accuracy drop of at most %g points at %g%% "
                       "confidence for %s: stored %s most accurate knob still faster than full (not promised); "
                       "default policy at %s: %s", len(texts), max_accuracy_drop, 100 * confidence,
                       ", ".join(unpromised), "its" if len(unpromised) == 1 else "each one's", precision, default)
    logger.info("default policy at %s: %s", precision, default)
    return chosen
