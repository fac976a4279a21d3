"""The one place a server chooses the backend its worker runs the model on (``geep.runtime``)."""

from __future__ import annotations

from geep.modeling.model import MultiExitClassifier
from geep.runtime.base import Backend
from geep.runtime.precision import make_backend


def build_backend(model: MultiExitClassifier, precision: str = "fp32") -> Backend:
    """The backend a server's worker steps rows on: the model at ``precision`` (``geep.runtime.precision``: fp32,
    int8 on the CPU, fp16/bf16), on the model's device, prepared once."""
    return make_backend(model, precision)
