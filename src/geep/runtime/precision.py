"""Choosing the backend for a precision: the one place predict, calibrate, bench, the server and Ray ask.

Precisions (``--precision``):

- ``fp32``: the model as it is (``TorchBackend``), on the CPU or CUDA;
- ``int8``: the CPU only; every Linear of the encoder in int8 with per-token activation scales
  (``geep.runtime.int8``), each row's attention over its own length (``geep.runtime.exact_attention``; a family whose
  attention does not run through transformers' AttentionInterface runs each length of a step apart instead,
  ``LengthGroupedBackend``), embeddings, layer norms and exit heads in fp32: a row's answer is the same in any batch;
- ``fp16``: CUDA only;
- ``bf16``: CUDA, and the CPU (measured faster than fp32 on this project's CPU, which has AVX512-BF16:
  ``benchmarks/int8_choice.py``).

A precision other than fp32 runs a prepared copy of the model (the model itself stays as it is), made once per
process and kept while the model lives and its weights are unchanged (a weight replaced or changed in place makes a
new copy). Quantising MiniLM-L6 takes well under a second, so nothing is written to disk.
"""

from __future__ import annotations

import copy
import logging
import weakref

import torch

from geep.errors import GeepError
from geep.modeling.cascade import Cascade
from geep.modeling.model import MultiExitClassifier
from geep.runtime.exact_attention import NAME as OWN_LENGTH, supports_own_length_attention, use_own_length_attention
from geep.runtime.cascade import CascadeBackend
from geep.runtime.int8 import quantize_linears
from geep.runtime.torch_backend import LengthGroupedBackend, TorchBackend

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "int8", "fp16", "bf16")
DEVICE_TYPES = {"fp32": ("cpu", "cuda"), "int8": ("cpu",), "fp16": ("cuda",), "bf16": ("cpu", "cuda")}
_HALF = {"fp16": torch.float16, "bf16": torch.bfloat16}

# model -> {precision: (fingerprint of the model's weights, prepared copy)}
_PREPARED: "weakref.WeakKeyDictionary[MultiExitClassifier, dict]" = weakref.WeakKeyDictionary()


def check_precision(precision: str, device: torch.device | str | None = None) -> str:
    """``precision``, checked against the known ones and against ``device``: a one-line GeepError otherwise."""
    if precision not in PRECISIONS:
        raise GeepError(f"unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}")
    if device is not None:
        kind = torch.device(device).type
        if kind not in DEVICE_TYPES[precision]:
            where = " or ".join(DEVICE_TYPES[precision])
            others = [p for p, kinds in DEVICE_TYPES.items() if kind in kinds]
            raise GeepError(f"{precision} runs on {where}, not {kind}; on {kind} use one of: {', '.join(others)}")
    return precision


def parse_precisions(text: str) -> list[str]:
    """A comma-separated list of precisions (``fp32,int8``), each checked, without duplicates, in order."""
    names = [p.strip() for p in text.split(",") if p.strip()]
    if not names:
        raise GeepError(f"no precision in {text!r}; choose from: {', '.join(PRECISIONS)}")
    return list(dict.fromkeys(check_precision(p) for p in names))


def make_backend(model: MultiExitClassifier | Cascade, precision: str = "fp32",
                 device: torch.device | str | None = None) -> TorchBackend | CascadeBackend:
    """The backend that runs ``model`` at ``precision`` (checked by ``geep.inference.spec.resolve_run``, the one
    place a run is resolved). ``device`` (default: the model's) moves the model there first. A cascade runs its
    members' backends at that precision in sequence (``geep.runtime.cascade``)."""
    if device is not None and torch.device(device) != model.device:
        model.to(device)
    if isinstance(model, Cascade):
        return CascadeBackend([make_backend(member, precision) for member in model.members], model.offsets,
                              model.exit_layers, model.label_order)
    if precision == "fp32":
        return TorchBackend(model)
    prepared = prepared_model(model, precision)
    if precision == "int8" and prepared.backbone.config._attn_implementation != OWN_LENGTH:
        return LengthGroupedBackend(prepared)  # attention it cannot switch: rows of one length at a time
    return TorchBackend(prepared)


def prepared_model(model: MultiExitClassifier, precision: str) -> MultiExitClassifier:
    """The copy of ``model`` that runs at ``precision`` (int8, fp16, bf16), made once and kept (see the module
    docstring); ``model`` itself is not changed. ``precision`` is one ``geep.inference.spec.resolve_run`` checked."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}")  # a caller that skipped resolve_run
    if precision == "fp32":
        return model
    fingerprint = _fingerprint(model)
    per_model = _PREPARED.setdefault(model, {})
    cached = per_model.get(precision)
    if cached is not None and cached[0] == fingerprint:
        return cached[1]
    prepared = _prepare(model, precision)
    per_model[precision] = (fingerprint, prepared)
    return prepared


def _prepare(model: MultiExitClassifier, precision: str) -> MultiExitClassifier:
    memo = {id(model.tokenizer): model.tokenizer, id(model.exit_table): model.exit_table}
    if precision == "int8":
        memo[id(model.heads)] = model.heads  # the heads stay fp32: share them
    prepared = copy.deepcopy(model, memo)
    if precision == "int8":
        n = sum(quantize_linears(layer) for layer in prepared.backbone.layers)
        encoder = prepared.backbone.encoder
        if supports_own_length_attention(encoder):
            use_own_length_attention(encoder)
            how = "each row's attention over its own length"
        else:
            how = f"{type(encoder).__name__} computes its own attention: each length of a step runs apart"
        logger.info("int8: %d Linear layers of the encoder quantised (per-token activations); %s", n, how)
    else:
        prepared.to(_HALF[precision])
        logger.info("%s: a copy of the model cast to %s", precision, _HALF[precision])
    return prepared.eval()


def _fingerprint(model: MultiExitClassifier) -> tuple:
    """Where each weight lives and how often it was changed in place: any change to the weights changes it (and a
    token hash replaced, which the copy carries)."""
    token_hash = getattr(model, "token_hash", None)
    return (str(model.device), id(token_hash)) + tuple((p.data_ptr(), p._version) for p in model.parameters())
