"""The HTTP API: a FastAPI app over one model and its worker (``geep serve``; OpenAPI docs at /docs).

- ``POST /predict``: texts in, one prediction per text in input order (``geep.serving.schema``). Each response
  equals ``geep.predict(model, [text], policy=..., knob=...)`` for each text alone: a row's answer does not depend
  on what else was in flight. Limits, each answered with a one-line ``detail``: more than ``max_queue`` rows in
  flight -> 503 with Retry-After; more than ``max_texts`` texts or a text over ``max_text_chars`` characters -> 413
  (shorter texts longer than the model's max length are truncated as offline); malformed JSON, wrong types, empty
  inputs, an unknown policy, a threshold out of range, a continue_threshold for a policy other than geep-verify
  -> 422; past ``request_timeout_s`` -> 504 and the request's rows leave the pools; a client that goes away has its
  rows dropped; an exception inside a step -> 500 for the requests with rows in that step only.
- ``GET /health`` (the process answers), ``GET /ready`` (the model is loaded and warmed up): never need a key.
- ``GET /info``: labels, exits, the default policy and knob, the calibration stored with the model, the limits.
- ``GET /metrics``: Prometheus text format (``geep.serving.metrics``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from geep.errors import GeepError
from geep.inference.inputs import GivenKnob, knob_from
from geep.inference.spec import SERVER_FALLBACK, RunSpec, resolve_run
from geep.modeling.cascade import Cascade
from geep.modeling.model import MultiExitClassifier
from geep.runtime.base import Backend
from geep.runtime.precision import make_backend
from geep.serving.auth import BearerAuth
from geep.serving.metrics import Metrics
from geep.serving.schema import UNREADABLE_BODY, ErrorResponse, PredictRequest, PredictResponse, validation_message
from geep.serving.settings import SERVABLE, ServeSettings
from geep.serving.worker import Job, Outcome, RowResult, Worker
from geep.tasks import Task

logger = logging.getLogger(__name__)

OPEN_PATHS = ("/health", "/ready")
RETRY_AFTER_S = 1
CLIENT_GONE = 499  # nginx's code for "the client closed the request": counted in the metrics, sent to nobody


def resolve_request(model: MultiExitClassifier, settings: ServeSettings, default: RunSpec | None = None,
                    name: str | None = None, threshold: float | None = None,
                    continue_threshold: float | None = None) -> RunSpec:
    """The run a request (or, without ``default``, the server itself) is resolved to, once (GeepError with the
    reason when it cannot run). No name and no threshold: ``default``; thresholds without a name, or with the
    default's name, apply to the default policy, and a value the request leaves out (geep-verify's tau or t) keeps
    the server's default; another policy's leaves out take the model's calibrated ones."""
    resolve = dict(precision=settings.precision, batch_size=settings.max_batch, schedule=settings.batching,
                   fallback=SERVER_FALLBACK)
    if default is None:
        return resolve_run(model, settings.policy, GivenKnob(threshold, continue_threshold), **resolve)
    if name is None and threshold is None and continue_threshold is None:
        return default
    if name is None or name == default.policy.name:
        given = knob_from(default.policy, threshold, continue_threshold)
        if given is None:
            return default
        return resolve_run(model, default.policy, default.policy.fill_knob(given, default.knob_values), **resolve)
    return resolve_run(model, name, GivenKnob(threshold, continue_threshold), **resolve)


def knob_fields(spec: RunSpec) -> dict[str, float | None]:
    """A run's knob as a response says it: ``threshold`` (the policy's first knob; geep-verify: tau) and
    ``continue_threshold`` (geep-verify's t), None where the policy has none."""
    values = spec.knob_values
    return {"threshold": next(iter(values.values()), None), "continue_threshold": values.get("continue_threshold")}


def create_app(model: MultiExitClassifier, settings: ServeSettings, *, backend: Backend | None = None,
               clock: Callable[[], float] = time.monotonic) -> FastAPI:
    """The app for ``model`` (eval mode, on its device) under ``settings``; ``backend`` default: the model at
    ``settings.precision`` (``geep.runtime.precision.make_backend``), prepared once. The model worker starts and stops with the app's lifespan.
    GeepError when the default policy or threshold cannot run."""
    settings.check()
    model.eval()
    default = resolve_request(model, settings, None, None, settings.threshold, settings.continue_threshold)
    metrics = Metrics()
    worker = Worker(model, backend or make_backend(model, default.precision), settings, default, metrics=metrics,
                    clock=clock)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        worker.start()
        yield
        await asyncio.to_thread(worker.stop, settings.request_timeout_s + 5.0)

    app = FastAPI(title="geep", summary="Early-exit text classification", lifespan=lifespan,
                  responses={422: {"model": ErrorResponse}})
    app.state.worker, app.state.metrics, app.state.settings = worker, metrics, settings
    if settings.api_key:
        def rejected(path: str) -> None:
            if path == "/predict":
                metrics.request(401)
                metrics.reject("unauthorized")
        app.add_middleware(BearerAuth, key=settings.api_key, open_paths=OPEN_PATHS, on_reject=rejected)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        if request.url.path == "/predict":
            metrics.request(422)
            metrics.reject("invalid")
        detail = validation_message(list(exc.errors()))
        kind = request.headers.get("content-type")
        if not kind or "json" not in kind:  # FastAPI reads a body as JSON only under a JSON content type
            detail = f"send the body as JSON with Content-Type: application/json (got {kind or 'none'})"
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def unreadable(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 400 and request.url.path == "/predict":  # FastAPI's answer to a body it cannot
            metrics.request(422)                                         # decode (not UTF-8): a 422 like the rest
            metrics.reject("invalid")
            return JSONResponse({"detail": UNREADABLE_BODY}, status_code=422)
        return await http_exception_handler(request, exc)

    def refuse(status: int, reason: str, detail: str, headers: dict | None = None, rows: int = 0) -> HTTPException:
        metrics.request(status)
        metrics.reject(reason, rows)
        return HTTPException(status, detail, headers=headers)

    @app.post("/predict", response_model=PredictResponse,
              responses={s: {"model": ErrorResponse} for s in (401, 413, 500, 503, 504)})
    async def predict(body: PredictRequest, request: Request) -> Any:
        arrival = clock()
        try:
            spec = resolve_request(model, settings, default, body.policy, body.threshold, body.continue_threshold)
        except GeepError as e:
            raise refuse(422, "invalid", str(e)) from None
        texts, pairs = body.texts()
        if len(texts) > settings.max_texts:
            raise refuse(413, "too_many_texts", f"{len(texts)} texts in one request; at most {settings.max_texts}",
                         rows=len(texts))
        for i, text in enumerate(texts + (pairs or [])):
            if len(text) > settings.max_text_chars:
                which = f"text {i}" if i < len(texts) else f"text pair {i - len(texts)}"
                raise refuse(413, "text_too_long", f"{which} has {len(text)} characters; at most "
                                                   f"{settings.max_text_chars}", rows=len(texts))
        if not worker.alive:
            detail = "the server is shutting down" if worker.error is None else "the model worker stopped"
            raise refuse(503, "unavailable", detail, {"Retry-After": str(RETRY_AFTER_S)}, len(texts))
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Outcome] = loop.create_future()

        def done(outcome: Outcome) -> None:  # on the worker thread
            loop.call_soon_threadsafe(lambda: answer.done() or answer.set_result(outcome))

        job = Job(texts, pairs, spec, arrival, done)
        if not worker.submit(job):
            raise refuse(503, "queue_full", f"the server is full: more than {settings.max_queue} rows would be "
                                            "in flight; retry later", {"Retry-After": str(RETRY_AFTER_S)}, len(texts))
        gone = asyncio.ensure_future(_disconnected(request))
        timeout = max(settings.request_timeout_s - (clock() - arrival), 0.0)
        try:
            finished, _ = await asyncio.wait({answer, gone}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        metrics.latency.observe(clock() - arrival)
        if answer not in finished:
            worker.cancel(job.id, "timeout" if not finished else "disconnected")
            if finished:  # the client went away: nobody reads this
                metrics.request(CLIENT_GONE)
                return Response(status_code=CLIENT_GONE)
            metrics.request(504)
            raise HTTPException(504, f"no answer within {settings.request_timeout_s:g} s; the request's rows "
                                     "were dropped")
        outcome = answer.result()
        metrics.request(outcome.status)
        if outcome.status != 200:
            raise HTTPException(outcome.status, outcome.error)
        predictions = []
        for result in outcome.predictions:
            item = prediction_item(model.task, result, body.return_probabilities)
            if result.exit_member is not None:
                item["exit_member"] = result.exit_member
            predictions.append(item)
        return JSONResponse({"predictions": predictions, "model": settings.name, "policy": spec.policy.name,
                             **knob_fields(spec)})

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/ready", responses={503: {"model": ErrorResponse}})
    async def ready() -> Any:
        if worker.ready.is_set() and worker.alive:
            return {"status": "ready"}
        detail = "warming up" if worker.error is None else f"the model worker stopped: {worker.error}"
        return JSONResponse({"detail": detail}, status_code=503)

    @app.get("/info")
    async def info() -> dict:
        config = model.config
        members = {"members": list(config.members)} if isinstance(model, Cascade) else {}
        return {"model": settings.name, "task": config.task, "labels": list(config.label_names),
                "num_layers": model.num_layers, "exit_layers": list(model.exit_layers),
                "max_length": config.max_length, **members,
                "policy": default.policy.name, **knob_fields(default), "knob": default.knob_values,
                "policies": list(SERVABLE),
                "calibration": {"default_knobs": config.default_knobs, "default_policy": config.default_policy,
                                "exit_table": config.exit_table},
                "batching": settings.batching, "pool_order": settings.pool_order, "precision": settings.precision,
                "limits": {"max_batch": settings.max_batch, "max_wait_ms": settings.max_wait_ms,
                           "max_queue": settings.max_queue, "max_texts": settings.max_texts,
                           "max_text_chars": settings.max_text_chars,
                           "request_timeout_s": settings.request_timeout_s}}

    @app.get("/metrics")
    async def metrics_text() -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    return app


def prediction_item(task: Task, result: RowResult, probabilities: bool) -> dict[str, Any]:
    """One row's answer in /predict's body, by the model's task: classification ``{"label", "score": its
    probability}``; multi-label ``{"labels": [...], "score": the lowest probability of a label in the set (1 for an
    empty set)}``; regression ``{"score": the predicted score}``; each with ``exit_layer`` and, asked for, every
    label's ``probabilities`` (not for regression)."""
    names = task.label_names
    if task.name == "regression":
        return {"score": result.prediction, "exit_layer": result.exit_layer}
    if task.name == "token-classification":  # per text: its words, their tags and exits, the entity spans
        return dict(result.prediction)
    probs = dict(zip(names, result.probabilities))
    if task.name == "multi-label":
        item: dict[str, Any] = {"labels": result.prediction,
                                "score": min((probs[name] for name in result.prediction), default=1.0)}
    else:
        item = {"label": result.prediction, "score": probs[result.prediction]}
    item["exit_layer"] = result.exit_layer
    if probabilities:
        item["probabilities"] = probs
    return item


async def _disconnected(request: Request) -> None:
    """Returns when the client has gone away. The body is already read, so the next ASGI message is the
    disconnect (uvicorn does not cancel a handler whose client left)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
