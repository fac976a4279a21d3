"""Running resolved specs over tokenised rows: one policy's run (:func:`run_spec`) and the all-exits pass
(:func:`all_exit_logits`) that calibration and the bench replay. Results are in input order, on the CPU."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from geep.errors import GeepError
from geep.inference.inputs import as_texts, label_ids
from geep.inference.offline import run_rows
from geep.inference.outputs import ExitLogits, PolicyRun
from geep.inference.rows import Prepared, prepare
from geep.inference.spec import RunSpec, resolve_run
from geep.modeling.model import MultiExitClassifier
from geep.policies import Policy, none_leave
from geep.runtime.flops import FlopsCount, FlopsSpec
from geep.runtime.precision import make_backend
from geep.scheduling import Step
from geep.tokens import Encoded, token_lengths


def progress_bar(total: int, show: bool, desc: str = "predict"):
    return tqdm(total=total, disable=not show, unit="row", desc=desc, leave=False)


@torch.inference_mode()
def run_spec(model: MultiExitClassifier, spec: RunSpec, rows: Prepared | Encoded, *,
             order: Sequence[int] | None = None, labels: Tensor | None = None, show_progress: bool = False
             ) -> PolicyRun:
    """Runs ``spec`` (already resolved: :func:`geep.inference.spec.resolve_run`) over tokenised rows (``prepare``'s
    output, or ``model.tokenize``'s, then prepared here).

    ``order``: the order fresh rows are batched in (default: by token length for ``shrink``) and, for ``pooled``,
    how ties are broken and which rows are scheduled together. ``labels``: the task's targets (class ids (N,);
    multi-hot (N, C)), for policies that read them (``label_ids``). FLOPs do not depend on the precision.
    """
    if not isinstance(rows, Prepared):
        rows = prepare(model, spec, (), encoded=rows)
    n = len(rows)
    if labels is not None and len(labels) != n:
        raise GeepError(f"{len(labels)} labels for {n} rows")
    if spec.policy.needs_labels and labels is None:
        raise GeepError(f"the {spec.policy.name} policy needs the true labels (a label column)")
    if order is not None and sorted(order) != list(range(n)):
        raise ValueError(f"order must list each of the {n} rows once")
    model.eval()
    backend = make_backend(model, spec.precision)
    flops = FlopsCount(FlopsSpec.from_model(model))
    bar = progress_bar(n, show_progress)
    try:
        answered = run_rows(backend, spec, rows, order=order, labels=labels, flops=flops, on_finished=bar.update)
    finally:
        bar.close()
    return PolicyRun(answered.probabilities.cpu(), answered.exit_layer.cpu(), flops, answered.predictions.cpu())


def run_policy(model: MultiExitClassifier, encoded: Encoded, policy: str | Policy = "full", knob: Any = None, *,
               batch_size: int = 32, order: Sequence[int] | None = None,
               labels: Sequence[int | str] | Tensor | None = None, schedule: str | None = None,
               show_progress: bool = False, precision: str = "fp32") -> PolicyRun:
    """Resolves one run (:func:`resolve_run`) and runs it over already tokenised rows (``model.tokenize``):
    for scripts and tests; entries that run a spec many times resolve it once and call :func:`run_spec`.
    ``labels``: names or class ids."""
    spec = resolve_run(model, policy, knob, precision=precision, batch_size=batch_size, schedule=schedule)
    ids = None if labels is None else label_ids(model, labels)
    return run_spec(model, spec, encoded, order=order, labels=ids, show_progress=show_progress)


class _RecordEveryExit(Policy):
    """Reads every exit and lets no row leave before L: the all-exits pass."""

    name = "record-every-exit"

    def decide(self, logits: Tensor, knob: Any, memory: dict) -> tuple[Tensor, dict]:
        return none_leave(logits), memory


@torch.inference_mode()
def all_exit_logits(model: MultiExitClassifier, encoded: Encoded | Sequence[str],
                    text_pairs: Sequence[str] | None = None, *, batch_size: int = 32,
                    show_progress: bool = False, precision: str = "fp32") -> ExitLogits:
    """Every exit's outputs (N, |E|, K + S) for every row in one pass (no row leaves), for calibration and policy
    replay.

    ``encoded`` is the output of ``model.tokenize`` or a list of texts (then tokenised here). ``precision``: the
    backend the pass runs on (calibrating at int8 replays int8 logits).
    """
    spec = dataclasses.replace(resolve_run(model, "full", precision=precision, batch_size=batch_size),
                               policy=_RecordEveryExit(), schedule="shrink")
    if not hasattr(encoded, "keys"):
        encoded = model.tokenize(as_texts(encoded), None if text_pairs is None else as_texts(text_pairs, "text_pairs"))
    model.eval()
    backend = make_backend(model, precision)
    lengths = token_lengths(encoded)
    n, C = len(lengths), model.output_size
    index = {k: i for i, k in enumerate(model.exit_layers)}
    logits = torch.zeros((n, len(index), C), device=model.device)

    def record(step: Step, row_ids: Tensor, step_logits: Tensor) -> None:
        logits[row_ids, index[step.end]] = step_logits.float()

    bar = progress_bar(n, show_progress)
    try:
        run_rows(backend, spec, Prepared(encoded, None), on_head=record, on_finished=bar.update)
    finally:
        bar.close()
    return ExitLogits(logits.cpu(), torch.tensor(lengths, dtype=torch.long))
