"""``geep serve``: an HTTP server over one model with layer-level continuous batching (FastAPI + uvicorn).

The top layer beside ``geep.cli``; it needs the ``serve`` extra (``pip install 'geep[serve]'``). ``create_app``
builds the app, ``ServeSettings`` holds its limits, ``run_server`` runs it under uvicorn.
"""

from geep.serving.app import create_app
from geep.serving.server import bind, run_server
from geep.serving.settings import ServeSettings

__all__ = ["ServeSettings", "bind", "create_app", "run_server"]
