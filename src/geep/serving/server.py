"""Running the app under uvicorn on a socket bound beforehand, with a shutdown that loses nothing.

On SIGTERM (or Ctrl-C) the server stops accepting connections, the worker stops waiting for fuller batches and
finishes every request in flight, uvicorn answers them, and the process exits 0 (uvicorn itself re-raises the
signal after its graceful shutdown, which would end the process with the signal's status).
"""

from __future__ import annotations

import signal
import socket
from collections.abc import Callable
from types import FrameType
from typing import Any

import uvicorn

from geep.errors import GeepError


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: any free port); GeepError in one line when it cannot be."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as e:
        raise GeepError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return sock


class GracefulServer(uvicorn.Server):
    """uvicorn's server, told of the exit signal first (``on_exit``) and not re-raising it afterwards."""

    def __init__(self, config: uvicorn.Config, on_exit: Callable[[], None]) -> None:
        super().__init__(config)
        self.on_exit = on_exit

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.on_exit()
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True  # a second Ctrl-C: stop now
        else:
            self.should_exit = True


def run_server(app: Any, sock: socket.socket, *, grace_s: float, log_level: str = "info") -> None:
    """Serves ``app`` on ``sock`` until SIGTERM/SIGINT, then shuts down gracefully (at most ``grace_s`` for the
    requests in flight)."""
    config = uvicorn.Config(app, log_level=log_level, access_log=False, timeout_graceful_shutdown=grace_s,
                            lifespan="on")
    server = GracefulServer(config, app.state.worker.flush)
    server.run(sockets=[sock])
