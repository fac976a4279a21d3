"""Texts in, labels out: the inference entry points on top of the model (as transformers' pipelines are).

- :func:`predict` (also ``geep.predict``): labels, probabilities and exit layers of texts under an exit policy.
- :class:`Predictor`: the same with the model, policy, knob and batch size bound once (``Predictor.from_pretrained``).
- :func:`run_policy`: a policy over already tokenised rows, with the FLOPs of what ran (the bench times this).
- :func:`all_exit_logits`: every exit's logits for every row in one pass (calibration and the bench replay it).

Every run goes through the one scheduler (``geep.scheduling``) and executor (``geep.inference.executor``) on a
backend (``geep.runtime``). All policies get the same batches: rows sorted by token length, cut into batches
(``shrink``), or for the policies that predict exit layers, sorted buckets with pooled continuation (``pooled``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from geep.errors import GeepError
from geep.exit_table import exit_distribution
from geep.inference.inputs import as_texts, check_batch_size, check_label, check_model
from geep.inference.offline import run_rows
from geep.inference.outputs import ExitLogits, PolicyRun, PredictionOutput
from geep.modeling.model import MultiExitClassifier
from geep.policies import Policy, get_policy, none_leave
from geep.runtime.flops import FlopsCount, FlopsSpec
from geep.runtime.precision import check_precision, make_backend
from geep.scheduling import STRATEGIES, Step
from geep.tokens import Encoded, token_lengths

logger = logging.getLogger(__name__)

NO_TABLE = "this model has no exit table; build one with `geep build-table --model DIR --data DATA`"


# -------------------------------------------------------------------------------------------------- inputs
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


def label_ids(model: MultiExitClassifier, labels: Sequence[int | str] | Tensor) -> Tensor:
    """Labels as class ids (N,): a tensor or ints pass through, names map through ``model.label_names``."""
    if isinstance(labels, Tensor):
        return labels.long()
    index = {name: i for i, name in enumerate(model.label_names)}
    out = []
    for i, label in enumerate(labels):
        check_label(label, i, model.config.num_labels)
        if isinstance(label, str):
            if label not in index:
                raise GeepError(f"label {label!r} is not one of the model's labels: {', '.join(model.label_names)}")
            out.append(index[label])
        else:
            out.append(int(label))
    return torch.tensor(out, dtype=torch.long)


def build_threshold(model: MultiExitClassifier) -> float | None:
    """S, the build threshold recorded with the model's exit table (None without a table)."""
    if model.exit_table is None or not model.config.exit_table:
        return None
    return float(model.config.exit_table["build_threshold"])


def resolve_knob(model: MultiExitClassifier, policy: str | Policy, knob: Any = None, *, precision: str = "fp32"
                 ) -> Any:
    """``knob`` checked, or the model's calibrated default for the policy at ``precision`` (a precision not
    calibrated takes the fp32 one), else the policy's own default. Named values (``{"continue_threshold": 0.2}``)
    or a geep-verify pair with a None part replace only what they name (``Policy.fill_knob``)."""
    policy = get_policy(policy)
    check_precision(precision)
    stored = model.config.stored_knob(precision, policy.name)
    if stored is None and precision != "fp32":
        stored = model.config.stored_knob("fp32", policy.name)
        if stored is not None and knob is None:
            logger.info("%s: no knob calibrated at %s; using the fp32 one (`geep calibrate --precision %s`)",
                        policy.name, precision, precision)
    knob = policy.fill_knob(knob, stored)
    if policy.predicts_layers:
        require_table(model)
    policy.check_stored(stored, model.config.num_labels, len(model.exit_layers),
                        build_threshold=build_threshold(model))  # a damaged config.json said as such
    return policy.resolve_knob(knob, model.config.num_labels, len(model.exit_layers),
                               build_threshold=build_threshold(model))


def default_policy(model: MultiExitClassifier, precision: str = "fp32") -> str | None:
    """The policy ``geep calibrate`` stored as the model's default at ``precision`` (else at fp32), or None when
    none is stored or the model cannot run it (a geep policy without an exit table)."""
    name = model.config.stored_policy(precision) or model.config.stored_policy("fp32")
    if name is None or (get_policy(name).needs_table and model.exit_table is None):
        return None
    return name


def require_table(model: MultiExitClassifier):
    """The model's exit table, on the model's device; GeepError when it has none."""
    if model.exit_table is None or not model.config.exit_table:
        raise GeepError(NO_TABLE)
    if model.exit_table.device != model.device:
        model.exit_table = model.exit_table.to(model.device)
    return model.exit_table


def predicted_layers(model: MultiExitClassifier, policy: str | Policy, knob: Any, encoded: Encoded) -> Tensor:
    """Each row's predicted exit layer (N,) in E from its tokens (the model does not run), for a policy that
    predicts exit layers; ``knob`` resolved (:func:`resolve_knob`)."""
    q = exit_distribution(require_table(model), encoded, model.pad_token_id)  # (N, L)
    return get_policy(policy).predict_layers(q, knob, model.exit_layers).cpu()


def progress_bar(total: int, show: bool, desc: str = "predict"):
    return tqdm(total=total, disable=not show, unit="row", desc=desc, leave=False)


# ---------------------------------------------------------------------------------------------------- runs
@torch.inference_mode()
def run_policy(model: MultiExitClassifier, encoded: Encoded, policy: str | Policy = "full", knob: Any = None, *,
               batch_size: int = 32, order: Sequence[int] | None = None,
               labels: Sequence[int | str] | Tensor | None = None, schedule: str | None = None,
               show_progress: bool = False, precision: str = "fp32") -> PolicyRun:
    """Runs ``policy`` over already tokenised rows (``model.tokenize``); results in input order, on the CPU.

    ``knob`` goes through :func:`resolve_knob` (None: the model's default for the policy). ``order``: the order
    fresh rows are batched in (default: by token length) and, for ``pooled``, how ties are broken and which rows are
    scheduled together. ``labels`` (N,) names or class ids, for policies that read them. ``schedule``: ``shrink``
    or ``pooled`` (default: the policy's; the policies that predict exit layers need ``pooled``). ``precision``:
    ``fp32``, ``int8`` (CPU), ``fp16`` (CUDA) or ``bf16`` (``geep.runtime.precision``); FLOPs do not depend on it.
    """
    policy = get_policy(policy)
    knob = resolve_knob(model, policy, knob, precision=precision)
    n = len(encoded["input_ids"])
    batch_size = check_batch_size(batch_size)
    if labels is not None:
        labels = label_ids(model, labels)
        if len(labels) != n:
            raise GeepError(f"{len(labels)} labels for {n} rows")
    if policy.needs_labels and labels is None:
        raise GeepError(f"the {policy.name} policy needs the true labels (a label column)")
    if order is not None and sorted(order) != list(range(n)):
        raise ValueError(f"order must list each of the {n} rows once")
    schedule = schedule or policy.schedule
    if schedule not in STRATEGIES:
        raise GeepError(f"unknown schedule {schedule!r}; choose one of: {', '.join(STRATEGIES)}")
    if policy.predicts_layers and schedule != "pooled":
        raise GeepError(f"{policy.name} runs sorted buckets: schedule 'pooled'")
    model.eval()
    backend = make_backend(model, precision)
    predicted = predicted_layers(model, policy, knob, encoded).tolist() if policy.predicts_layers else None
    flops = FlopsCount(FlopsSpec.from_model(model))
    bar = progress_bar(n, show_progress)
    try:
        probabilities, exit_layer = run_rows(backend, policy, knob, encoded, batch_size=batch_size,
                                              schedule=schedule, order=order, predicted=predicted, labels=labels,
                                              flops=flops, on_finished=bar.update)
    finally:
        bar.close()
    return PolicyRun(probabilities.cpu(), exit_layer.cpu(), flops)


class _RecordEveryExit(Policy):
    """Reads every exit and lets no row leave before L: the all-exits pass."""

    name = "record-every-exit"

    def decide(self, logits: Tensor, knob: Any, memory: dict) -> tuple[Tensor, dict]:
        return none_leave(logits), memory


@torch.inference_mode()
def all_exit_logits(model: MultiExitClassifier, encoded: Encoded | Sequence[str],
                    text_pairs: Sequence[str] | None = None, *, batch_size: int = 32,
                    show_progress: bool = False, precision: str = "fp32") -> ExitLogits:
    """Every exit's logits for every row in one pass (no row leaves), for calibration and policy replay.

    ``encoded`` is the output of ``model.tokenize`` or a list of texts (then tokenised here). ``precision``: the
    backend the pass runs on (calibrating at int8 replays int8 logits).
    """
    batch_size = check_batch_size(batch_size)
    if not hasattr(encoded, "keys"):
        encoded = model.tokenize(as_texts(encoded), None if text_pairs is None else as_texts(text_pairs, "text_pairs"))
    model.eval()
    backend = make_backend(model, precision)
    lengths = token_lengths(encoded)
    n, C = len(lengths), model.config.num_labels
    index = {k: i for i, k in enumerate(model.exit_layers)}
    logits = torch.zeros((n, len(index), C), device=model.device)

    def record(step: Step, row_ids: Tensor, step_logits: Tensor) -> None:
        logits[row_ids, index[step.end]] = step_logits.float()

    bar = progress_bar(n, show_progress)
    try:
        run_rows(backend, _RecordEveryExit(), None, encoded, batch_size=batch_size, schedule="shrink",
                 on_head=record, on_finished=bar.update)
    finally:
        bar.close()
    return ExitLogits(logits.cpu(), torch.tensor(lengths, dtype=torch.long))


# -------------------------------------------------------------------------------------------------- predict
def predict(model: MultiExitClassifier, texts: str | Sequence[str], text_pairs: str | Sequence[str] | None = None,
            *, policy: str | Policy | None = None, knob: Any = None, batch_size: int = 32,
            labels: Sequence[int | str] | Tensor | None = None, show_progress: bool = False,
            device: str | torch.device | None = None, precision: str = "fp32") -> PredictionOutput:
    """Labels, probabilities and exit layers of ``texts`` (a string or a list) under an exit policy.

    ``policy``: ``full``, ``fastbert``, ``deebert``, ``confidence``, ``pabee``, ``geep``, ``geep-verify`` or
    ``oracle``; None: the model's calibrated default policy (:func:`default_policy`), else ``full``. ``knob`` None
    takes the model's calibrated knob for the policy (``geep calibrate``), else the policy's documented default;
    geep-verify's is (tau, continue_threshold) (``VerifyKnob``; a number is tau).
    ``labels`` (names or class ids) are needed by ``oracle`` only. ``device`` moves the model there first.
    ``precision``: ``fp32`` (default), ``int8`` (CPU), ``fp16`` (CUDA), ``bf16``; the knob defaults to the one
    calibrated at that precision. A wrong argument (``texts`` None or holding bytes, ``batch_size=1.5``) is a
    GeepError naming it (``geep.inference.inputs``).
    """
    check_model(model)
    texts = as_texts(texts, "texts")
    pairs = None if text_pairs is None else as_texts(text_pairs, "text_pairs")
    batch_size = check_batch_size(batch_size)
    policy = get_policy(policy if policy is not None else default_policy(model, precision) or "full")
    knob = resolve_knob(model, policy, knob, precision=precision)
    if pairs is not None and len(pairs) != len(texts):
        raise GeepError(f"{len(pairs)} text pairs for {len(texts)} texts")
    ids = None if labels is None else label_ids(model, labels)
    if policy.needs_labels and ids is None:
        raise GeepError(f"the {policy.name} policy needs the true labels (a label column)")
    target = resolve_device(device)
    if target is not None:
        model.to(target)
    check_precision(precision, model.device)
    if not texts:
        C = model.config.num_labels
        empty = torch.zeros((0,), dtype=torch.long)
        return PredictionOutput([], empty, torch.zeros((0, C)), empty.clone())
    encoded = model.tokenize(texts, pairs)
    run = run_policy(model, encoded, policy, knob, batch_size=batch_size, labels=ids, show_progress=show_progress,
                     precision=precision)
    label_idx = run.probabilities.argmax(-1)
    names = [model.label_names[i] for i in label_idx.tolist()]
    logger.debug("%s: %d rows, %.3g FLOPs", policy.name, len(texts), run.flops.total)
    return PredictionOutput(names, label_idx, run.probabilities, run.exit_layer)


class Predictor:
    """A model with its exit policy, knob, batch size and precision bound: ``Predictor(model, "geep-verify")(texts)``.

    ``policy`` None: the model's calibrated default policy at ``precision``, else ``full``; ``knob`` None takes the
    model's calibrated default for the policy at ``precision``. Checked once, at construction (where a precision
    other than fp32 prepares its copy of the model).
    """

    def __init__(self, model: MultiExitClassifier, policy: str | None = None, knob: Any = None, *,
                 batch_size: int = 32, device: str | torch.device | None = None, precision: str = "fp32") -> None:
        self.model = check_model(model)
        self.policy = get_policy(policy if policy is not None else default_policy(model, precision) or "full")
        target = resolve_device(device)
        if target is not None:
            model.to(target)
        model.eval()
        self.precision = precision
        make_backend(model, precision)  # checks the precision on this device and prepares its model once
        self.knob = resolve_knob(model, self.policy, knob, precision=precision)
        self.batch_size = check_batch_size(batch_size)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, policy: str | None = None, knob: Any = None, **kwargs: Any
                        ) -> "Predictor":
        """Loads a saved model directory and binds a policy to it."""
        return cls(MultiExitClassifier.from_pretrained(directory), policy, knob, **kwargs)

    def __call__(self, texts: str | Sequence[str], text_pairs: str | Sequence[str] | None = None, *,
                 labels: Sequence[int | str] | Tensor | None = None, show_progress: bool = False
                 ) -> PredictionOutput:
        return predict(self.model, texts, text_pairs, policy=self.policy, knob=self.knob,
                       batch_size=self.batch_size, labels=labels, show_progress=show_progress,
                       precision=self.precision)
