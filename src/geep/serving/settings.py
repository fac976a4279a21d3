"""What a server is configured with (``geep serve``'s flags), checked once before the model loads."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from geep.errors import GeepError
from geep.policies import POLICIES
from geep.scheduling import POOL_ORDERS

logger = logging.getLogger(__name__)

BATCHING = ("layer", "shrink")
# The policies a request can name: not those that read the true labels, which a server never has.
SERVABLE = tuple(name for name, policy in POLICIES.items() if not policy.needs_labels)


@dataclass
class ServeSettings:
    """A server's limits and defaults (see ``geep serve --help``). ``policy`` None: the model's calibrated default,
    else the server's fallback (``geep.inference.spec``, ``SERVER_FALLBACK``)."""

    policy: str | None = None
    threshold: float | None = None
    continue_threshold: float | None = None  # geep-verify's t (None: the calibrated one, else the table's S)
    max_batch: int = 32
    max_wait_ms: float = 5.0
    max_queue: int = 1024  # rows in flight
    max_texts: int = 64  # per request
    max_text_chars: int = 100_000
    request_timeout_s: float = 30.0
    batching: str = "layer"
    pool_order: str = "deepest"
    api_key: str | None = None
    name: str = "model"  # the model's name in responses
    precision: str = "fp32"  # the backend's precision (geep.runtime.precision) and whose calibrated knobs apply

    def check(self) -> "ServeSettings":
        """GeepError naming the first value out of range; returns self."""
        for flag, value, low in (("--max-batch", self.max_batch, 1), ("--max-queue", self.max_queue, 1),
                                 ("--max-texts", self.max_texts, 1), ("--max-text-chars", self.max_text_chars, 1)):
            if value < low:
                raise GeepError(f"{flag} must be at least {low}, got {value}")
        if not (math.isfinite(self.max_wait_ms) and self.max_wait_ms >= 0):  # inf: a lone request waits for its 504
            raise GeepError(f"--max-wait-ms must be a finite number of at least 0, got {self.max_wait_ms}")
        if not (math.isfinite(self.request_timeout_s) and self.request_timeout_s > 0):
            raise GeepError(f"--request-timeout-s must be a finite number above 0, got {self.request_timeout_s}")
        if self.max_wait_ms >= 1000 * self.request_timeout_s:
            logger.warning("--max-wait-ms %g is not below --request-timeout-s %g: a request whose rows do not fill a "
                           "batch waits until it times out (504)", self.max_wait_ms, self.request_timeout_s)
        if self.policy is not None and not self.policy:
            raise GeepError("--policy is empty; name a policy or leave --policy out for the model's default")
        if self.batching not in BATCHING:
            raise GeepError(f"unknown batching {self.batching!r}; choose one of: {', '.join(BATCHING)}")
        if self.pool_order not in POOL_ORDERS:
            raise GeepError(f"unknown pool order {self.pool_order!r}; choose one of: {', '.join(POOL_ORDERS)}")
        if self.api_key is not None and not self.api_key:
            raise GeepError("the API key is empty")
        return self
