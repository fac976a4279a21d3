"""``--api-key-env``: every route but the open ones (/health, /ready) needs ``Authorization: Bearer <key>``.

The scheme is matched case-insensitively (RFC 9110, 11.1: ``bearer`` and ``BEARER`` are ``Bearer``), the key
exactly, in constant time.

A plain ASGI middleware, so it guards the routes FastAPI adds itself (/docs, /openapi.json) as well as ours, and
passes every other message through untouched (the /predict handler listens for the client's disconnect).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Collection
from typing import Any

from starlette.responses import JSONResponse

UNAUTHORIZED = "missing or wrong API key: send the header `Authorization: Bearer <key>`"


class BearerAuth:
    """Answers 401 (one line, ``WWW-Authenticate: Bearer``) to a request without the key on a guarded path;
    ``on_reject(path)`` is told of each."""

    def __init__(self, app: Any, key: str, open_paths: Collection[str], on_reject: Callable[[str], None]) -> None:
        self.app = app
        self.expected = key.encode()
        self.open_paths = set(open_paths)
        self.on_reject = on_reject

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http" and scope["path"] not in self.open_paths:
            given = next((value for name, value in scope["headers"] if name == b"authorization"), b"")
            scheme, _, token = given.strip().partition(b" ")
            # RFC 9110 (11.1): the scheme is case-insensitive ("bearer" is Bearer); the key is compared exactly.
            if scheme.lower() != b"bearer" or not secrets.compare_digest(token.strip(), self.expected):
                self.on_reject(scope["path"])
                response = JSONResponse({"detail": UNAUTHORIZED}, status_code=401,
                                        headers={"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
