"""Backends the executor runs rows on (``base``: the seam), and the FLOPs of what ran (``flops``)."""

from geep.runtime.base import Backend
from geep.runtime.flops import FlopsCount, FlopsSpec
from geep.runtime.replay import ReplayBackend
from geep.runtime.torch_backend import TorchBackend

__all__ = ["Backend", "FlopsCount", "FlopsSpec", "ReplayBackend", "TorchBackend"]
