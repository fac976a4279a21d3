"""`geep serve`: an HTTP server over one saved model, with layer-level continuous batching (``geep.serving``).

Everything the user can get wrong (the extra not installed, the model directory, policy, threshold, limits,
device, the API key's variable, the address) is checked before the server starts, each as one line.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
from pathlib import Path

from geep.cli.argtypes import set_threads
from geep.errors import GeepError

logger = logging.getLogger(__name__)

SERVE_EXTRA = ("fastapi", "uvicorn", "prometheus_client")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from geep.scheduling import POOL_ORDERS

    p = subparsers.add_parser(
        "serve", help="serve a saved model over HTTP",
        description="Serve a saved geep model over HTTP (FastAPI + uvicorn; docs at /docs): POST /predict, "
                    "GET /health /ready /info /metrics. Rows are batched layer by layer across requests.",
    )
    p.add_argument("--model", required=True, metavar="DIR", help="a directory written by `geep train`")
    p.add_argument("--policy", default=None, metavar="P",
                   help="default exit policy (default: the model's calibrated default policy, from `geep "
                   "calibrate`; for a model calibrated before that was stored, geep-verify when the model has an "
                   "exit table and a calibrated geep-verify knob, else fastbert); a request may name another")
    p.add_argument("--threshold", default=None, type=float, metavar="KNOB",
                   help="the default policy's knob (default: the model's calibrated one, else the policy's own); "
                   "geep-verify: tau")
    p.add_argument("--continue-threshold", default=None, type=float, metavar="T",
                   help="geep-verify's continuation threshold t in [0, 1]: after its predicted layer a row leaves "
                   "where the fastbert rule at t holds (default: the calibrated one, else the exit table's build "
                   "threshold S); a request may send its own")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", default=8000, type=int, help="0: any free port (default: 8000)")
    p.add_argument("--max-batch", default=32, type=int, help="most rows in one step (default: 32)")
    p.add_argument("--max-wait-ms", default=5.0, type=float,
                   help="how long a batch of new rows waits to fill up (default: 5)")
    p.add_argument("--max-queue", default=1024, type=int,
                   help="most rows in flight; more -> 503 with Retry-After (default: 1024)")
    p.add_argument("--max-texts", default=64, type=int, help="most texts per request; more -> 413 (default: 64)")
    p.add_argument("--max-text-chars", default=100_000, type=int,
                   help="longest text in characters; longer -> 413 (default: 100000)")
    p.add_argument("--request-timeout-s", default=30.0, type=float,
                   help="a request not answered by then -> 504 and its rows are dropped (default: 30)")
    p.add_argument("--batching", default="layer", choices=("layer", "shrink"),
                   help="layer: rows re-batched across requests at every exit (default); shrink: early exit as "
                   "served today, each batch run to its end before the next starts")
    p.add_argument("--pool-order", default="deepest", choices=list(POOL_ORDERS),
                   help="with --batching layer, which ready pool runs next (default: deepest; see README)")
    p.add_argument("--device", default=None, metavar="cpu|cuda", help="default: where the model loads (cpu)")
    p.add_argument("--precision", default="fp32", metavar="P",
                   help="fp32 (default), int8 (CPU), fp16 (CUDA), bf16; the knobs calibrated at that precision apply")
    p.add_argument("--threads", default=None, type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--api-key-env", default=None, metavar="NAME",
                   help="require `Authorization: Bearer <key>` on every route but /health and /ready, the key "
                   "read from the environment variable NAME")
    p.set_defaults(func=run)


def require_extra() -> None:
    """GeepError naming the extra when FastAPI, uvicorn or prometheus-client is missing."""
    missing = [name for name in SERVE_EXTRA if importlib.util.find_spec(name) is None]
    if missing:
        raise GeepError(f"geep serve needs the serve extra ({', '.join(missing)} missing): "
                        "pip install 'geep[serve]'")


def run(args: argparse.Namespace) -> int:
    require_extra()

    from geep.inference.spec import resolve_device
    from geep.modeling.cascade import load_model
    from geep.serving import ServeSettings, bind, create_app, run_server

    api_key = None
    if args.api_key_env is not None:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            raise GeepError(f"--api-key-env {args.api_key_env}: that environment variable is not set or empty")
    set_threads(args.threads)
    if not 0 <= args.port <= 65535:
        raise GeepError(f"--port must be in 0..65535, got {args.port}")
    settings = ServeSettings(policy=args.policy, threshold=args.threshold,
                             continue_threshold=args.continue_threshold, max_batch=args.max_batch,
                             max_wait_ms=args.max_wait_ms, max_queue=args.max_queue, max_texts=args.max_texts,
                             max_text_chars=args.max_text_chars, request_timeout_s=args.request_timeout_s,
                             batching=args.batching, pool_order=args.pool_order, api_key=api_key,
                             name=Path(args.model).resolve().name, precision=args.precision).check()
    device = resolve_device(args.device)
    sock = bind(args.host, args.port)  # before the model loads: a taken port is said at once
    try:
        model = load_model(args.model)
        if device is not None:
            model.to(device)
        app = create_app(model, settings)
    except BaseException:
        sock.close()
        raise
    host, port = sock.getsockname()[:2]
    policy = app.state.worker.spec.policy.name
    print(f"geep serve: {settings.name} ({policy}, {settings.precision}, --batching {settings.batching}) on "
          f"http://{host}:{port} "
          f"(docs: /docs)", flush=True)
    run_server(app, sock, grace_s=settings.request_timeout_s + 5.0)
    return 0
