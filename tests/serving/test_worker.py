"""The model worker through the HTTP API, with backends that hold or fail a step: rows are answered the moment
they exit, rows of different requests share steps, a failing step fails only its requests, timed-out and
abandoned requests leave the pools."""

from __future__ import annotations

import asyncio
import json
import socket

import httpx

from geep.inference import predict
from tests.serving.conftest import FOREVER_MS, WAIT_S, FailingBackend, HeldBackend, client, make_app, serving, until


def post_all(url: str, bodies: list[dict]) -> list[httpx.Response]:
    """Sends the bodies concurrently; their responses in order."""
    async def go():
        async with httpx.AsyncClient(base_url=url, timeout=WAIT_S) as http:
            return await asyncio.gather(*(http.post("/predict", json=body) for body in bodies))
    return asyncio.run(go())


def test_a_row_that_exits_is_answered_while_another_requests_row_is_held_deeper(tiny):
    """Batch of 2 (never a partial one): request A's row leaves at exit 1 and A is answered while B's row, from
    the same first step, is held in the step to exit 2; B is answered once released."""
    model, texts, knob, early, late = tiny
    backend = HeldBackend(model, hold_from=1)
    app = make_app(model, backend, policy="fastbert", threshold=knob, max_batch=2, max_wait_ms=FOREVER_MS)
    with serving(app) as url:
        backend.hold.set()

        async def scenario():
            async with httpx.AsyncClient(base_url=url, timeout=WAIT_S) as http:
                a = asyncio.ensure_future(http.post("/predict", json={"inputs": early[0]}))
                b = asyncio.ensure_future(http.post("/predict", json={"inputs": late[0]}))
                answered_a = await asyncio.wait_for(a, WAIT_S)  # nothing is released yet
                held = await asyncio.to_thread(backend.holding.wait, WAIT_S)  # B's row reached the held step
                held = held and not b.done()
                backend.release.set()
                return answered_a, held, await asyncio.wait_for(b, WAIT_S)
        a, held_while_a_answered, b = asyncio.run(scenario())
    assert a.status_code == 200 and a.json()["predictions"][0]["exit_layer"] == 1
    assert held_while_a_answered, "A should be answered while B's row is held at a later layer"
    assert b.status_code == 200 and b.json()["predictions"][0]["exit_layer"] > 1
    first = [rows for start, _, rows in backend.steps if start == 0]
    assert len(first[-1]) == 2  # A's and B's rows ran the first step together


def test_a_step_past_the_first_exit_mixes_rows_of_two_requests(tiny):
    model, texts, knob, early, late = tiny
    backend = HeldBackend(model)
    app = make_app(model, backend, policy="fastbert", threshold=knob, max_batch=4, max_wait_ms=FOREVER_MS)
    with serving(app) as url:
        backend.steps.clear()
        bodies = [{"inputs": [late[0], early[0]]}, {"inputs": [late[1], early[1]]}]
        responses = post_all(url, bodies)
    assert [r.status_code for r in responses] == [200, 200]
    for body, r in zip(bodies, responses):
        layers = [p["exit_layer"] for p in r.json()["predictions"]]
        assert layers[0] > 1 and layers[1] == 1
    deeper = [rows for start, _, rows in backend.steps if start >= 1]
    assert deeper and len(deeper[0]) == 2, backend.steps  # one late row of each request, in one step


def test_a_failing_step_fails_only_its_requests(tiny):
    """A (leaves at exit 1) and B (goes on) share the first step; B's next step raises: B gets a one-line 500,
    A its answer, and the next request is served as usual."""
    model, texts, knob, early, late = tiny
    backend = FailingBackend(model, fail_from=1)
    app = make_app(model, backend, policy="fastbert", threshold=knob, max_batch=2, max_wait_ms=FOREVER_MS)
    with serving(app) as url, client(url) as http:
        backend.armed.set()
        a, b = post_all(url, [{"inputs": early[0]}, {"inputs": late[0]}])
        assert a.status_code == 200 and a.json()["predictions"][0]["exit_layer"] == 1
        assert b.status_code == 500
        detail = b.json()["detail"]
        assert "the model failed on a step" in detail and "forced failure in a step" in detail
        r = http.post("/predict", json={"inputs": [late[1], early[1]]})
        assert r.status_code == 200
        expected = predict(model, [late[1]], policy="fastbert", knob=knob)
        assert r.json()["predictions"][0]["exit_layer"] == int(expected.exit_layer[0])
        assert app.state.worker.inflight == 0
        failed = [s.value for s in app.state.metrics.rows.collect()[0].samples
                  if s.name.endswith("_total") and s.labels["status"] == "failed"]
        assert failed == [1]


def rows_with_status(app, status: str) -> float:
    return sum(s.value for s in app.state.metrics.rows.collect()[0].samples
               if s.name.endswith("_total") and s.labels["status"] == status)


def test_a_request_past_its_timeout_gets_504_and_its_rows_leave(tiny):
    """A lone row waits for a batch of 2 that never fills; at the timeout it is answered 504 and dropped."""
    model, texts, knob, early, late = tiny
    backend = HeldBackend(model)
    app = make_app(model, backend, policy="fastbert", threshold=knob, max_batch=2, max_wait_ms=FOREVER_MS,
                   request_timeout_s=0.5)
    with serving(app) as url, client(url) as http:
        backend.steps.clear()
        r = http.post("/predict", json={"inputs": late[0]})
        assert r.status_code == 504 and "no answer within 0.5 s" in r.json()["detail"]
        asyncio.run(until(lambda: app.state.worker.inflight == 0))
        assert rows_with_status(app, "timeout") == 1
        assert http.post("/predict", json={"inputs": [early[0], early[1]]}).status_code == 200
    assert all(len(rows) == 2 for _, _, rows in backend.steps)  # the dropped row never ran


def test_a_client_that_disconnects_has_its_rows_dropped(tiny):
    model, texts, knob, early, late = tiny
    backend = HeldBackend(model)
    app = make_app(model, backend, policy="fastbert", threshold=knob, max_batch=2, max_wait_ms=FOREVER_MS)
    with serving(app) as url, client(url) as http:
        backend.steps.clear()
        host, port = url.removeprefix("http://").split(":")
        body = json.dumps({"inputs": late[0]}).encode()
        with socket.create_connection((host, int(port)), timeout=WAIT_S) as sock:
            sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            asyncio.run(until(lambda: app.state.worker.inflight == 1))
        asyncio.run(until(lambda: app.state.worker.inflight == 0))
        assert rows_with_status(app, "disconnected") == 1
        assert http.post("/predict", json={"inputs": [early[0], early[1]]}).status_code == 200
        requests = {s.labels["status"]: s.value for s in app.state.metrics.requests.collect()[0].samples
                    if s.name.endswith("_total")}
        assert requests == {"499": 1, "200": 1}
    assert all(len(rows) == 2 for _, _, rows in backend.steps)  # the abandoned row never ran
