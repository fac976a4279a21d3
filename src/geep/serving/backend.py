"""The one place a server chooses the backend its worker runs the model on (``geep.runtime``)."""

from __future__ import annotations

from geep.modeling.model import MultiExitClassifier
from geep.runtime.base import Backend
from geep.runtime.torch_backend import TorchBackend


def build_backend(model: MultiExitClassifier) -> Backend:
    """The backend a server's worker steps rows on: the PyTorch module, on the model's device."""
    return TorchBackend(model)
