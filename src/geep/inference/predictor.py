"""The user-facing API: ``geep.predict(model, texts, ...)`` and ``geep.Predictor`` (a model with its run bound).

Both resolve their run once (``geep.inference.spec.resolve_run``: policy, knob, precision, device, batch size) and
hand the frozen spec to the runner (``geep.inference.runs``); nothing below resolves it again. Nothing else in geep
imports this module: the server, the bench, calibration and Ray build on ``spec``, ``rows`` and ``runs`` directly.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from geep.inference.inputs import as_texts, check_model, label_ids
from geep.inference.outputs import PredictionOutput
from geep.inference.rows import prepare
from geep.inference.runs import run_spec
from geep.inference.spec import RunSpec, resolve_run
from geep.errors import GeepError
from geep.modeling.cascade import Cascade, load_model
from geep.modeling.model import MultiExitClassifier
from geep.policies import Policy
from geep.runtime.precision import make_backend

logger = logging.getLogger(__name__)


class Predictor:
    """A model with its exit policy, knob, batch size, precision and device bound: ``Predictor(model,
    "geep-verify")(texts)``.

    ``policy`` None: the model's calibrated default policy at ``precision``, else ``full``; ``knob`` None takes the
    model's calibrated default for the policy at ``precision``, else the policy's own default (geep-verify's is
    (tau, continue_threshold), a ``VerifyKnob``; a number is tau). Resolved once, at construction
    (:attr:`spec`), where ``device`` moves the model and a precision other than fp32 prepares its copy of the model.
    """

    def __init__(self, model: MultiExitClassifier, policy: str | Policy | None = None, knob: Any = None, *,
                 batch_size: int = 32, device: str | torch.device | None = None, precision: str = "fp32") -> None:
        self.model = check_model(model)
        self.spec: RunSpec = resolve_run(model, policy, knob, precision=precision, device=device,
                                         batch_size=batch_size)
        if self.spec.device != model.device:
            model.to(self.spec.device)
        model.eval()
        make_backend(model, self.spec.precision)  # prepares the precision's copy of the model once

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, policy: str | Policy | None = None, knob: Any = None,
                        **kwargs: Any) -> "Predictor":
        """Loads a saved model (or cascade) directory and binds a policy to it."""
        return cls(load_model(directory), policy, knob, **kwargs)

    @property
    def policy(self) -> Policy:
        return self.spec.policy

    @property
    def knob(self) -> Any:
        return self.spec.knob

    @property
    def precision(self) -> str:
        return self.spec.precision

    @property
    def batch_size(self) -> int:
        return self.spec.batch_size

    def __call__(self, texts: str | Sequence[str], text_pairs: str | Sequence[str] | None = None, *,
                 labels: Sequence[int | str] | Tensor | None = None, show_progress: bool = False
                 ) -> PredictionOutput:
        """Predictions, probabilities and exit layers of ``texts`` (a string or a list; ``text_pairs`` beside them):
        label names (classification), label sets (multi-label) or scores (regression), by the model's task.
        ``labels`` (names or class ids; multi-label: lists of names) are read by ``oracle`` only."""
        model, spec = self.model, self.spec
        texts = as_texts(texts, "texts")
        pairs = None if text_pairs is None else as_texts(text_pairs, "text_pairs")
        if pairs is not None and len(pairs) != len(texts):
            raise GeepError(f"{len(pairs)} text pairs for {len(texts)} texts")
        ids = None if labels is None else label_ids(model, labels)
        if ids is not None and len(ids) != len(texts):
            raise GeepError(f"{len(ids)} labels for {len(texts)} texts")
        if spec.policy.needs_labels and ids is None:
            raise GeepError(f"the {spec.policy.name} policy needs the true labels (a label column)")
        task = model.task
        if not texts:
            return PredictionOutput.empty(task, cascade=isinstance(model, Cascade))
        run = run_spec(model, spec, prepare(model, spec, texts, pairs), labels=ids, show_progress=show_progress)
        logger.debug("%s: %d rows, %.3g FLOPs", spec.describe(), len(texts), run.flops.total)
        members = model.exit_members(run.exit_layer) if isinstance(model, Cascade) else None
        return PredictionOutput.from_run(task, run, members)


def predict(model: MultiExitClassifier, texts: str | Sequence[str], text_pairs: str | Sequence[str] | None = None,
            *, policy: str | Policy | None = None, knob: Any = None, batch_size: int = 32,
            labels: Sequence[int | str] | Tensor | None = None, show_progress: bool = False,
            device: str | torch.device | None = None, precision: str = "fp32") -> PredictionOutput:
    """Labels, probabilities and exit layers of ``texts`` (a string or a list) under an exit policy:
    ``Predictor(model, policy, knob, ...)(texts, text_pairs, labels=...)``.

    ``policy``: ``full``, ``fastbert``, ``deebert``, ``confidence``, ``pabee``, ``geep``, ``geep-verify`` or
    ``oracle``; None: the model's calibrated default policy, else ``full``. ``knob`` None takes the model's
    calibrated knob for the policy (``geep calibrate``), else the policy's documented default. ``labels`` (names or
    class ids) are needed by ``oracle`` only. ``device`` moves the model there first. ``precision``: ``fp32``
    (default), ``int8`` (CPU), ``fp16`` (CUDA), ``bf16``; the knob defaults to the one calibrated at that precision.
    A wrong argument (``texts`` None or holding bytes, ``batch_size=1.5``) is a GeepError naming it.
    """
    check_model(model)
    texts = as_texts(texts, "texts")  # checked before the run is resolved: a wrong argument is named first
    return Predictor(model, policy, knob, batch_size=batch_size, device=device, precision=precision)(
        texts, text_pairs, labels=labels, show_progress=show_progress)
