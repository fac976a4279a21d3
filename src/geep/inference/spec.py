"""A run, resolved once: which policy, at which knob, precision, schedule, device and batch size.

Every public entry (``geep.predict``, ``geep.Predictor``, the CLI commands, the server per request, the Ray actor,
calibration's and the bench's runs) calls :func:`resolve_run` once and passes the frozen :class:`RunSpec` down;
nothing below re-resolves it. :func:`resolve_run` is the only caller of the default-policy, knob, precision and
exit-table checks, so what a run means is decided in one place:

- ``policy`` None: the policy ``geep calibrate`` stored as the model's default at ``precision`` (else at fp32),
  else ``fallback`` (``full`` offline; a server falls back further, :data:`SERVER_FALLBACK`);
- ``knob`` (a ``GivenKnob`` from a command line or a request is read for the policy first) None: the knob calibrated for the policy at ``precision`` (a precision not calibrated takes the fp32
  one), else the policy's default; named values (``{"continue_threshold": 0.2}``) or a geep-verify pair with a None
  part replace only what they name (``Policy.fill_knob``);
- ``precision`` checked against the device the model is on (or ``device``);
- ``schedule`` None: the policy's own; a policy that predicts exit layers needs one that runs rows to them;
- the policy must apply to the model's task (``Policy.tasks``) and, reading a learned exit, the model needs the exit
  module; it is bound to the model's output layout (``Policy.bind``), so it reads only its task's columns, and a
  policy that reads calibrated probabilities (``confidence``) to the exits' temperatures at ``precision``
  (``Policy.with_temperatures``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

from geep.errors import GeepError
from geep.exit_table import ExitTable
from geep.inference.inputs import GivenKnob, check_batch_size, knob_from
from geep.modeling.cascade import Cascade
from geep.modeling.model import MultiExitClassifier
from geep.policies import Policy, get_policy, policies_for
from geep.policies.cascade import CascadePolicy
from geep.runtime.precision import check_precision
from geep.scheduling import STRATEGIES
from geep.tasks import OutputLayout, Task, get_task

logger = logging.getLogger(__name__)

NO_TABLE = "this model has no exit table; build one with `geep build-table --model DIR --data DATA`"
# Schedules that run a row to its predicted exit layer (reading no head before it).
PREDICTED_SCHEDULES = ("pooled", "layer")
# Policies a server cannot run: they read the true labels.
NEEDS_LABELS_IN_SERVER = "the {name} policy needs the true labels, which a server does not have"
# What a server runs when the model stores no default policy: geep-verify when it has a table and a calibrated
# geep-verify knob (models calibrated before the default policy was stored), else fastbert.
SERVER_FALLBACK = "serve"


@dataclass(frozen=True)
class RunSpec:
    """A resolved run. ``policy`` is bound to the model's output layout; ``knob`` is checked and filled in
    (geep-verify: a ``VerifyKnob``); ``schedule`` names a strategy of ``geep.scheduling``; ``device`` is where the
    model runs; ``task`` the model's task, which answers the rows (None: classification over every column)."""

    policy: Policy
    knob: Any
    precision: str
    schedule: str
    device: torch.device
    batch_size: int
    task: Task | None = None

    @property
    def knob_values(self) -> dict[str, float]:
        """The knob as named values (``{"tau": 0.3, "continue_threshold": 0.2}``; ``{}`` without a knob)."""
        return self.policy.knob_values(self.knob)

    def describe(self) -> str:
        """``fastbert (threshold=0.3) at int8``, for logs and messages."""
        knob = ", ".join(f"{k}={v:g}" for k, v in self.knob_values.items())
        return f"{self.policy.name}{f' ({knob})' if knob else ''} at {self.precision}"


def resolve_device(device: str | torch.device | None) -> torch.device | None:
    """A torch device for ``device`` (None stays None); GeepError when CUDA is asked for but absent."""
    if device is None:
        return None
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise GeepError(f"unknown device {device!r}; use cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise GeepError(f"device {device} asked for, but CUDA is not available (torch {torch.__version__})")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise GeepError(f"device {device} asked for, but there are {torch.cuda.device_count()} CUDA devices")
    return device


def resolve_run(model: MultiExitClassifier, policy: str | Policy | None = None, knob: Any = None, *,
                precision: str = "fp32", device: str | torch.device | None = None, batch_size: int = 32,
                schedule: str | None = None, fallback: str = "full", device_type: str | None = None) -> RunSpec:
    """The :class:`RunSpec` of running ``model`` under ``policy`` at ``knob`` (see the module docstring).

    ``device``: where the run goes (checked; the caller moves the model); None: the model's device. ``fallback``:
    the policy when none is given and none is calibrated, or :data:`SERVER_FALLBACK` for a server's rule, which
    also refuses policies that read labels. ``device_type``: check the precision against that kind of device
    instead of ``device`` (a Ray driver without a GPU resolving the run of GPU actors). GeepError (one line) for
    anything that cannot run.
    """
    target = resolve_device(device) or model.device
    check_precision(precision, device_type or target)
    batch_size = check_batch_size(batch_size)
    serving = fallback == SERVER_FALLBACK
    if policy is None:
        name = _default_policy(model, precision)
        if name is not None and schedule is not None and policy_for(model, name).predicts_layers \
                and schedule not in PREDICTED_SCHEDULES:
            name = None  # a calibrated geep policy gives way under a schedule that cannot run it
        policy = name or (_server_fallback(model, precision, schedule) if serving else fallback)
    policy = policy_for(model, policy, precision)
    if isinstance(knob, GivenKnob):
        knob = knob_from(policy, knob.threshold, knob.continue_threshold, knob.cascade_thresholds)
    if serving and policy.needs_labels:
        raise GeepError(NEEDS_LABELS_IN_SERVER.format(name=policy.name))
    schedule = schedule or policy.schedule
    if schedule not in STRATEGIES:
        raise GeepError(f"unknown schedule {schedule!r}; choose one of: {', '.join(STRATEGIES)}")
    if policy.predicts_layers and schedule not in PREDICTED_SCHEDULES:
        raise GeepError(f"{policy.name} runs rows to their predicted layers, which the {schedule!r} schedule "
                        f"cannot; use {' or '.join(map(repr, PREDICTED_SCHEDULES))} (a server: --batching layer)")
    return RunSpec(policy, _resolve_knob(model, policy, knob, precision), precision, schedule, target, batch_size,
                   model.task)


def output_layout(model: MultiExitClassifier) -> OutputLayout:
    """How the model's exit outputs are laid out: its task's K columns, then its exit module's signals; |E| exits."""
    config = model.config
    return OutputLayout(config.task, config.num_outputs, config.num_signals, len(model.exit_layers),
                        config.num_labels if getattr(model, "class_means", None) is not None else 0,
                        trust=config.num_labels if getattr(model, "trust_sets", None) is not None else 0,
                        classes=config.num_labels if config.task == "token-classification" else 0)


def usable_policies(model: MultiExitClassifier) -> list[str]:
    """The registered policies ``model`` can run: those of its task, ``lte`` with an exit module, ``class-means`` and
    ``trust-score`` with their fitted statistics, ``hashee`` with a token hash (a policy that needs an exit table is listed either way)."""
    return policies_for(model.config.task, signal=model.config.exit_module,
                        class_means=getattr(model, "class_means", None) is not None,
                        trust_score=getattr(model, "trust_sets", None) is not None,
                        token_hash=getattr(model, "token_hash", None) is not None)


def bind_policy(model: MultiExitClassifier, policy: Policy) -> Policy:
    """``policy`` bound to the model's output layout; GeepError (one line) when it does not apply to the model's
    task, or reads a learned exit the model does not have."""
    task, signal = model.config.task, model.config.exit_module is not None
    if task not in policy.tasks:
        article = "an" if task[0] in "aeiou" else "a"
        usable = usable_policies(model)
        raise GeepError(f"the {policy.name} policy reads {policy.reads}; {article} {task} model can use: "
                        f"{', '.join(usable)}")
    if policy.needs_signal and model.config.exit_module != policy.exit_module:
        how = "--objective ponder" if policy.exit_module == "ponder" else f"--exit-module {policy.exit_module}"
        has = f"this model's exit module is {model.config.exit_module}" if signal else "this model has no exit module"
        raise GeepError(f"the {policy.name} policy reads {policy.reads}, and {has}; train one with "
                        f"`geep train {how}`")
    if policy.halts_tokens and getattr(model, "token_hash", None) is None:
        raise GeepError(f"the {policy.name} policy reads {policy.reads}, and this model has none; train one with "
                        "`geep train --objective hashee`")
    if policy.needs_class_means and model.class_means is None:
        raise GeepError(f"the {policy.name} policy reads {policy.reads}, and this model has none fitted; fit them "
                        "with `geep fit-means --model DIR --train DATA`")
    if policy.needs_trust_score and getattr(model, "trust_sets", None) is None:
        raise GeepError(f"the {policy.name} policy reads {policy.reads}, and this model has none fitted; fit them "
                        "with `geep fit-means --model DIR --train DATA --statistics trust-score`")
    return policy.bind(output_layout(model))


def policy_for(model: MultiExitClassifier | Cascade, policy: str | Policy, precision: str = "fp32") -> Policy:
    """The policy object a run of ``model`` uses: the registered one, bound to the model's outputs
    (:func:`bind_policy`) and, for a policy that reads ``calibrated`` probabilities, to each exit's temperature
    calibrated at ``precision`` (else fp32's; none stored: raw probabilities); for a cascade, the member policy wrapped in
    the cascade's rule (``geep.policies.cascade``) with the temperatures calibrated at ``precision``. A cascade takes
    a member policy's name (``full`` is ``cascade``) or its cascade name (``cascade``, ``cascade-fastbert``)."""
    if not isinstance(model, Cascade):
        bound = bind_policy(model, get_policy(policy))
        temperatures = model.config.stored_temperatures(precision) if bound.calibrated else None
        if temperatures is None:
            return bound
        return bound.with_temperatures(dict(zip(model.exit_layers, temperatures)))
    if isinstance(policy, CascadePolicy):
        return policy
    if isinstance(policy, str) and policy == "cascade":
        policy = "full"
    elif isinstance(policy, str) and policy.startswith("cascade-"):
        policy = policy[len("cascade-"):]
    inner = bind_policy(model, get_policy(policy))
    temperatures = model.config.temperatures_at(precision, len(model.boundaries))
    return CascadePolicy(inner, model.boundaries, temperatures, model.member_exits)


def require_table(model: MultiExitClassifier) -> ExitTable:
    """The model's exit table, on the model's device; GeepError when it has none."""
    if model.exit_table is None or not model.config.exit_table:
        raise GeepError(NO_TABLE)
    if model.exit_table.device != model.device:
        model.exit_table = model.exit_table.to(model.device)
    return model.exit_table


# ------------------------------------------------------------------------------------------------ internals
def _resolve_knob(model: MultiExitClassifier, policy: Policy, knob: Any, precision: str) -> Any:
    stored = model.config.stored_knob(precision, policy.name)
    if stored is None and precision != "fp32":
        stored = model.config.stored_knob("fp32", policy.name)
        if stored is not None and knob is None:
            logger.info("%s: no knob calibrated at %s; using the fp32 one (`geep calibrate --precision %s`)",
                        policy.name, precision, precision)
    knob = policy.fill_knob(knob, stored)
    if policy.needs_table:
        require_table(model)
    build_threshold = None
    if model.exit_table is not None and model.config.exit_table:
        build_threshold = float(model.config.exit_table["build_threshold"])
    C, E = model.config.num_labels, len(model.exit_layers)
    policy.check_stored(stored, C, E, build_threshold=build_threshold)  # a damaged config.json said as such
    return policy.resolve_knob(knob, C, E, build_threshold=build_threshold)


def _default_policy(model: MultiExitClassifier, precision: str) -> str | None:
    """The policy ``geep calibrate`` stored as the default at ``precision`` (else at fp32), or None when none is
    stored or the model cannot run it (a geep policy without an exit table)."""
    name = model.config.stored_policy(precision) or model.config.stored_policy("fp32")
    if name is None or (policy_for(model, name).needs_table and model.exit_table is None):
        return None
    return name


def _server_fallback(model: MultiExitClassifier, precision: str, schedule: str | None) -> str:
    if isinstance(model, Cascade):
        return "cascade"
    calibrated = model.config.stored_knob(precision, "geep-verify") or model.config.stored_knob("fp32",
                                                                                                "geep-verify")
    if model.exit_table is not None and calibrated and schedule in (None, *PREDICTED_SCHEDULES):
        return "geep-verify"
    return get_task(model.config.task).verify_rule  # classification: fastbert
