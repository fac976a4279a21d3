"""Backends the executor runs rows on (``base``: the seam), and the FLOPs of what ran (``flops``).

``make_backend(model, precision)`` (``precision``) is the one place a backend is chosen for a precision.
"""

from geep.runtime.base import Backend
from geep.runtime.flops import FlopsCount, FlopsSpec
from geep.runtime.precision import PRECISIONS, check_precision, make_backend, parse_precisions, prepared_model
from geep.runtime.replay import ReplayBackend
from geep.runtime.torch_backend import TorchBackend

__all__ = ["PRECISIONS", "Backend", "FlopsCount", "FlopsSpec", "ReplayBackend", "TorchBackend", "check_precision",
           "make_backend", "parse_precisions", "prepared_model"]
