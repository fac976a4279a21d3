"""The HTTP API on a real uvicorn: answers equal offline prediction under concurrency, every bad request gets its
status and one line, the limits, the API key, the metrics."""

from __future__ import annotations

import asyncio
import copy
import math
import random

import httpx
import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families

from geep.evaluation import build_table
from geep.inference import all_exit_logits, predict
from geep.inference import resolve_run
from geep.policies import entropy
from tests.serving.conftest import FOREVER_MS, WAIT_S, client, make_app, safe_texts, serving, until


def offline(model, texts, policy, knob):
    """Each text's (label, probabilities, exit layer) predicted alone."""
    out = {}
    for text in set(texts):
        one = predict(model, [text], policy=policy, knob=knob)
        out[text] = (one.labels[0], one.probabilities[0], int(one.exit_layer[0]))
    return out


async def clients(url: str, texts: list[str], n_clients: int, n_requests: int, seed: int, **extra):
    """n_clients concurrent clients, each sending n_requests requests of 1-8 texts; [(texts, response)]."""
    async def one(i: int):
        rng = random.Random(seed * 1000 + i)
        done = []
        async with httpx.AsyncClient(base_url=url, timeout=WAIT_S) as http:
            for _ in range(n_requests):
                batch = [rng.choice(texts) for _ in range(rng.randint(1, 8))]
                r = await http.post("/predict", json={"inputs": batch, "return_probabilities": True, **extra})
                done.append((batch, r))
        return done
    results = await asyncio.gather(*(one(i) for i in range(n_clients)))
    return [pair for result in results for pair in result]


@pytest.fixture(scope="module")
def with_table(tiny):
    """The tiny model with an exit table whose build threshold S is mid-range (geep-verify continues rows)."""
    model, texts, knob, early, late = tiny
    model = copy.deepcopy(model)
    logits = all_exit_logits(model, texts).logits
    S = float((entropy(logits[:, 1]) / math.log(3)).median())
    build_table(model, texts[:40], build_threshold=S)
    return model, texts, knob, early, late


@pytest.mark.parametrize("policy,batching", [("fastbert", "layer"), ("fastbert", "shrink"), ("pabee", "layer"),
                                             ("geep-verify", "layer")])
def test_concurrent_clients_get_what_offline_prediction_gives_each_text_alone(with_table, policy, batching):
    """32 clients x 4 requests of 1-8 texts: every prediction equals predict([text]) alone, none lost, in order."""
    model, texts, fastbert_knob, _, _ = with_table
    knob = {"fastbert": fastbert_knob, "pabee": 1, "geep-verify": 0.5}[policy]
    resolved = resolve_run(model, policy, knob).knob
    pool = safe_texts(model, texts, policy, resolved)
    assert len(pool) >= 40
    expected = offline(model, pool, policy, resolved)
    app = make_app(model, policy=policy, threshold=knob, batching=batching, max_batch=8)
    with serving(app) as url:
        answered = asyncio.run(clients(url, pool, 32, 4, seed=len(policy)))
    assert len(answered) == 32 * 4
    exits = set()
    for batch, r in answered:
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["policy"] == policy and len(body["predictions"]) == len(batch)
        for text, got in zip(batch, body["predictions"]):
            label, probabilities, exit_layer = expected[text]
            assert (got["label"], got["exit_layer"]) == (label, exit_layer)
            served = torch.tensor([got["probabilities"][name] for name in model.label_names])
            torch.testing.assert_close(served, probabilities, atol=1e-5, rtol=0)
            assert got["score"] == pytest.approx(float(probabilities.max()), abs=1e-5)
            exits.add(exit_layer)
    assert len(exits) >= 2, "rows should leave at different exits"
    steps = app.state.metrics.batch.collect()[0].samples
    assert max(s.value for s in steps if s.name.endswith("_sum")) > 0


def test_every_bad_request_gets_its_status_and_one_line(tiny):
    model, texts, knob, _, _ = tiny
    app = make_app(model, policy="fastbert", threshold=knob, max_texts=4, max_text_chars=50)
    bad = [
        ({"content": b'{"inputs": ["a"', "headers": {"content-type": "application/json"}}, 422, "malformed JSON"),
        ({"content": b'{"inputs": "a"}', "headers": {"content-type": "text/plain"}}, 422,
         "Content-Type: application/json (got text/plain)"),
        ({"content": b'{"inputs": "a"}'}, 422, "Content-Type: application/json (got none)"),
        ({"json": ["a"]}, 422, "JSON object with `inputs`"),
        ({"json": {}}, 422, "inputs: Field required"),
        ({"json": {"inputs": 3}}, 422, "inputs: must be a text"),
        ({"json": {"inputs": ["a", 3]}}, 422, "inputs: item 1 is not a string"),
        ({"json": {"inputs": [["a", "b"], "c"]}}, 422, "inputs: item 1 is not a [text, text pair] pair"),
        ({"json": {"inputs": []}}, 422, "inputs: no texts"),
        ({"content": b'{"inputs": "caf\xe9"}', "headers": {"content-type": "application/json"}}, 422,
         "the body is not UTF-8 text"),  # Latin-1 bytes: a 422 like every other bad body (FastAPI said 400)
        ({"content": b'{"inputs": "good \\ud800 film"}', "headers": {"content-type": "application/json"}}, 422,
         "inputs: the text is not valid Unicode text: a lone surrogate '\\ud800' at character 5"),
        ({"content": b'{"inputs": ["a", "\\udfff"]}', "headers": {"content-type": "application/json"}}, 422,
         "inputs: text 1 is not valid Unicode text"),
        ({"content": b'{"inputs": [["a", "b\\ud800"]]}', "headers": {"content-type": "application/json"}}, 422,
         "inputs: text pair 0 is not valid Unicode text"),
        ({"json": {"inputs": "a", "policy": ""}}, 422, "policy: must be a policy name"),
        ({"json": {"inputs": "a", "threshold": "0.3"}}, 422, "threshold: must be a number"),
        ({"json": {"inputs": "a", "threshold": True}}, 422, "threshold: must be a number"),
        ({"json": {"inputs": "a", "return_probabilities": "yes"}}, 422, "return_probabilities: must be true"),
        ({"json": {"inputs": "a", "policy": 3}}, 422, "policy: must be a policy name"),
        ({"json": {"inputs": "a", "colour": "red"}}, 422, "colour: Extra inputs are not permitted"),
        ({"json": {"inputs": "a", "policy": "fastest"}}, 422, "unknown policy 'fastest'"),
        ({"json": {"inputs": "a", "policy": "oracle"}}, 422, "needs the true labels"),
        ({"json": {"inputs": "a", "policy": "geep"}}, 422, "no exit table"),
        ({"json": {"inputs": "a", "threshold": 1.5}}, 422, "threshold must be a number in [0, 1], got 1.5"),
        ({"json": {"inputs": "a", "policy": "pabee", "threshold": 1.5}}, 422, "must be an integer"),
        ({"json": {"inputs": ["a"] * 5}}, 413, "5 texts in one request; at most 4"),
        ({"json": {"inputs": ["a", "b" * 51]}}, 413, "text 1 has 51 characters; at most 50"),
        ({"json": {"inputs": [["a", "b" * 51]]}}, 413, "text pair 0 has 51 characters"),
    ]
    with serving(app) as url, client(url) as http:
        for request, status, words in bad:
            r = http.post("/predict", **request)
            assert r.status_code == status, (request, r.text)
            detail = r.json()["detail"]
            assert isinstance(detail, str) and "\n" not in detail and words in detail, (request, detail)
            ok = http.post("/predict", json={"inputs": ["good film", "the plot was bad"]})
            assert ok.status_code == 200 and len(ok.json()["predictions"]) == 2
        rejected = {s.labels["reason"]: s.value for s in app.state.metrics.rejections.collect()[0].samples
                    if s.name.endswith("_total")}
    assert rejected == {"invalid": 24, "too_many_texts": 1, "text_too_long": 2}


def test_empty_and_whitespace_texts_are_answered_as_geep_predict_answers_them(tiny):
    """The one rule for empty texts (README): answered like any other, as geep.predict and geep predict answer them
    (where "" was a 422 and "  " was answered)."""
    model, texts, knob, _, _ = tiny
    app = make_app(model, policy="fastbert", threshold=knob)
    alone, pair = predict(model, [""], policy="fastbert", knob=knob), predict(model, [""], [""], policy="fastbert",
                                                                               knob=knob)
    with serving(app) as url, client(url) as http:
        for inputs, expected in (("", alone), ("   ", alone), (["", "\n\t"], alone), ([["", " "]], pair)):
            r = http.post("/predict", json={"inputs": inputs, "return_probabilities": True})
            assert r.status_code == 200, r.text
            for got in r.json()["predictions"]:
                assert (got["label"], got["exit_layer"]) == (expected.labels[0], int(expected.exit_layer[0]))
                assert got["score"] == pytest.approx(float(expected.probabilities[0].max()), abs=1e-5)


def test_pairs_a_threshold_and_another_policy_per_request(tiny):
    """A pair is read as a pair even by a model trained on single texts, as geep.predict reads it (README)."""
    model, texts, knob, early, late = tiny
    assert model.config.text_pair_column is None  # a single-text model
    app = make_app(model, policy="fastbert", threshold=knob)
    with serving(app) as url, client(url) as http:
        r = http.post("/predict", json={"inputs": [[texts[0], texts[1]]], "return_probabilities": True})
        pair = predict(model, [texts[0]], [texts[1]], policy="fastbert", knob=knob)
        got = r.json()["predictions"][0]
        assert (got["label"], got["exit_layer"]) == (pair.labels[0], int(pair.exit_layer[0]))
        r = http.post("/predict", json={"inputs": early[0], "threshold": 0.0})  # never exit early
        assert r.json()["predictions"][0]["exit_layer"] == 4 and r.json()["threshold"] == 0.0
        r = http.post("/predict", json={"inputs": late[0], "policy": "full"})
        assert r.json()["policy"] == "full" and r.json()["threshold"] is None
        assert r.json()["predictions"][0]["exit_layer"] == 4
        assert "probabilities" not in r.json()["predictions"][0]
        info = http.get("/info").json()
        assert info["labels"] == ["c0", "c1", "c2"] and info["exit_layers"] == [1, 2, 3, 4]
        assert info["policy"] == "fastbert" and info["threshold"] == pytest.approx(knob)
        assert "full" in info["policies"] and "oracle" not in info["policies"]
        assert http.get("/health").json() == {"status": "ok"} and http.get("/ready").status_code == 200
        assert http.get("/docs").status_code == 200 and "/predict" in http.get("/openapi.json").json()["paths"]


def test_a_full_queue_answers_503_with_retry_after(tiny):
    """max_queue 4: 3 rows wait for a fuller batch; 2 more would make 5 -> 503; 1 more fills the batch."""
    model, texts, knob, _, _ = tiny
    app = make_app(model, policy="fastbert", threshold=knob, max_queue=4, max_batch=4, max_wait_ms=FOREVER_MS)
    with serving(app) as url, client(url) as http:
        async def scenario():
            async with httpx.AsyncClient(base_url=url, timeout=WAIT_S) as h:
                waiting = asyncio.ensure_future(h.post("/predict", json={"inputs": texts[:3]}))
                await until(lambda: app.state.worker.inflight == 3)
                full = await h.post("/predict", json={"inputs": texts[3:5]})
                last = await h.post("/predict", json={"inputs": texts[5]})
                return full, await waiting, last
        full, first, last = asyncio.run(scenario())
        assert full.status_code == 503 and full.headers["retry-after"] == "1"
        assert "more than 4 rows would be in flight" in full.json()["detail"]
        assert first.status_code == 200 and last.status_code == 200
        assert len(first.json()["predictions"]) == 3
        rows = {s.labels["status"]: s.value for s in app.state.metrics.rows.collect()[0].samples
                if s.name.endswith("_total")}
        assert rows == {"rejected": 2, "ok": 4}
        assert http.post("/predict", json={"inputs": texts[:4]}).status_code == 200


def test_the_api_key_is_required_everywhere_but_health_and_ready(tiny, monkeypatch):
    model, texts, knob, _, _ = tiny
    app = make_app(model, policy="fastbert", threshold=knob, api_key="s3cret")
    with serving(app) as url, client(url) as http:
        assert http.get("/health").status_code == 200 and http.get("/ready").status_code == 200
        for method, path in (("POST", "/predict"), ("GET", "/info"), ("GET", "/metrics"), ("GET", "/docs"),
                             ("GET", "/openapi.json")):
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
                r = http.request(method, path, json={"inputs": "a"}, headers=headers)
                assert r.status_code == 401, (path, headers)
                assert "Authorization: Bearer" in r.json()["detail"] and r.headers["www-authenticate"] == "Bearer"
        key = {"Authorization": "Bearer s3cret"}
        assert http.post("/predict", json={"inputs": texts[0]}, headers=key).status_code == 200
        for scheme in ("bearer", "BEARER", "BeArEr"):  # RFC 9110: the scheme is case-insensitive, the key is not
            assert http.get("/info", headers={"Authorization": f"{scheme} s3cret"}).status_code == 200
        assert http.get("/info", headers={"Authorization": "Bearer S3CRET"}).status_code == 401
        assert http.get("/info", headers=key).status_code == 200
        assert http.get("/metrics", headers=key).status_code == 200


def test_metrics_parse_as_prometheus_text_and_count_what_happened(tiny):
    model, texts, knob, early, late = tiny
    app = make_app(model, policy="fastbert", threshold=knob, max_texts=8)
    with serving(app) as url, client(url) as http:
        sent = [early[:2], late[:3], [early[2]]]
        for batch in sent:
            assert http.post("/predict", json={"inputs": batch}).status_code == 200
        assert http.post("/predict", json={"inputs": ["a"] * 9}).status_code == 413
        r = http.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    value = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    assert value[("geep_requests_total", (("status", "200"),))] == 3
    assert value[("geep_requests_total", (("status", "413"),))] == 1
    assert value[("geep_rows_total", (("status", "ok"),))] == 6
    assert value[("geep_rejections_total", (("reason", "too_many_texts"),))] == 1
    assert value[("geep_request_latency_seconds_count", ())] == 3
    assert value[("geep_queue_rows", ())] == 0
    exited = {dict(labels)["layer"]: v for (name, labels), v in value.items() if name == "geep_rows_exited_total"}
    assert sum(exited.values()) == 6 and exited["1"] == 3  # the early texts left at the first exit
    steps = {dict(labels)["layer"]: v for (name, labels), v in value.items() if name == "geep_batch_size_sum"}
    assert steps["1"] == 6  # every row ran to the first exit (warm-up is not counted)


def test_geep_verify_s_continue_threshold_for_the_server_and_per_request(with_table):
    """--continue-threshold sets the server's t; a request may send its own t, its own tau, or both, and what it
    leaves out keeps the server's value. At tau = 0 the answers are fastbert's at t."""
    model, texts, knob, early, late = with_table
    app = make_app(model, policy="geep-verify", threshold=0.0, continue_threshold=knob)
    pool = safe_texts(model, texts, "fastbert", knob)
    batch = [t for t in pool if t in early][:2] + [t for t in pool if t in late][:2]
    expected = predict(model, batch, policy="fastbert", knob=knob).exit_layer.tolist()
    with serving(app) as url, client(url) as http:
        body = http.post("/predict", json={"inputs": batch}).json()
        assert body["policy"] == "geep-verify" and body["threshold"] == 0.0
        assert body["continue_threshold"] == pytest.approx(knob)
        assert [p["exit_layer"] for p in body["predictions"]] == expected and expected[:2] == [1, 1]
        body = http.post("/predict", json={"inputs": batch[0], "continue_threshold": 0.0}).json()
        assert (body["threshold"], body["continue_threshold"], body["predictions"][0]["exit_layer"]) == (0.0, 0.0, 4)
        body = http.post("/predict", json={"inputs": batch[0], "threshold": 1.0}).json()
        assert body["continue_threshold"] == pytest.approx(knob) and body["predictions"][0]["exit_layer"] == 4
        body = http.post("/predict", json={"inputs": batch[0], "policy": "fastbert"}).json()
        assert body["continue_threshold"] is None
        for request, words in (({"policy": "fastbert", "continue_threshold": 0.5}, "geep-verify's knob"),
                               ({"continue_threshold": 2}, "continue threshold must be a number in [0, 1], got 2"),
                               ({"continue_threshold": "0.2"}, "continue_threshold: must be a number")):
            r = http.post("/predict", json={"inputs": batch[0], **request})
            assert r.status_code == 422 and words in r.json()["detail"], r.text
        info = http.get("/info").json()
        assert info["knob"] == {"tau": 0.0, "continue_threshold": pytest.approx(knob)}
        assert info["continue_threshold"] == pytest.approx(knob)


def test_the_server_runs_the_calibrated_default_policy(with_table):
    """No --policy: the policy calibrate stored as the model's default (at its stored knob); under --batching
    shrink a geep policy gives way to fastbert; a model without one keeps the earlier rule."""
    model = copy.deepcopy(with_table[0])
    assert make_app(model).state.worker.spec.policy.name == "fastbert"  # no calibrated knob at all
    model.config.store_knob("fp32", "pabee", {"patience": 1})
    model.config.store_knob("fp32", "geep-verify", {"tau": 0.2, "continue_threshold": 0.4})
    assert make_app(model).state.worker.spec.policy.name == "geep-verify"  # calibrated before the default was stored
    model.config.store_policy("fp32", "pabee")
    worker = make_app(model).state.worker
    assert (worker.spec.policy.name, worker.spec.knob) == ("pabee", 1)
    model.config.store_policy("fp32", "geep-verify")
    worker = make_app(model).state.worker
    assert (worker.spec.policy.name, tuple(worker.spec.knob)) == ("geep-verify", (0.2, 0.4))
    assert make_app(model, batching="shrink").state.worker.spec.policy.name == "fastbert"


def test_at_int8_every_answer_is_offline_int8_prediction_alone(with_table):
    """--precision int8: the worker runs the int8 backend and the answers are geep.predict(precision="int8") of
    each text alone (int8 is batch-invariant: per-token activation scales)."""
    model, texts, knob, _, _ = with_table
    resolved = resolve_run(model, "fastbert", knob, precision="int8").knob
    expected = {}
    for text in texts[:24]:
        one = predict(model, [text], policy="fastbert", knob=resolved, precision="int8")
        expected[text] = (one.labels[0], int(one.exit_layer[0]), one.probabilities[0])
    app = make_app(model, policy="fastbert", threshold=knob, max_batch=8, precision="int8")
    with serving(app) as url:
        answered = asyncio.run(clients(url, texts[:24], 8, 2, seed=5))
        with client(url) as http:
            assert http.get("/info").json()["precision"] == "int8"
    for batch, r in answered:
        assert r.status_code == 200, r.text
        for text, got in zip(batch, r.json()["predictions"]):
            label, exit_layer, probabilities = expected[text]
            assert (got["label"], got["exit_layer"]) == (label, exit_layer)
            served = torch.tensor([got["probabilities"][name] for name in model.label_names])
            torch.testing.assert_close(served, probabilities, atol=1e-4, rtol=0)


@pytest.mark.parametrize("policy", ["trust-score", "confidence"])
def test_trust_score_and_calibrated_confidence_answers_are_offline_prediction_alone(tiny, policy):
    """A model with fitted trust-score sets and calibrated exit temperatures served under ``trust-score`` and
    ``confidence`` (which reads the temperatures): every answer is predict([text]) alone (texts whose signal at some
    exit lies within 1e-4 of the knob are left out: padding noise may flip them)."""
    from geep.evaluation.fit_means import fit_trust_sets

    model, texts, _, _, _ = tiny
    model = copy.deepcopy(model)
    labels = torch.randint(0, 3, (len(texts),), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        sets, settings = fit_trust_sets(model, model.tokenize(texts), labels, per_class=6)
    model.set_trust_sets(sets, {**settings, "source": "tiny"})
    model.config.temperatures = {"fp32": [2.0] * (len(model.exit_layers) - 1) + [1.0]}
    spec = resolve_run(model, policy)
    out = all_exit_logits(model, texts, batch_size=16).logits[:, :-1]  # (N, E-1, K + S)
    signal = torch.stack([spec.policy.confidence_at(k, out[:, i]) for i, k in enumerate(model.exit_layers[:-1])], 1)
    knob = float(signal[:, 1].median())
    pool = [t for t, ok in zip(texts, ((signal - knob).abs() > 1e-4).all(1).tolist()) if ok]
    assert len(pool) >= 40
    expected = offline(model, pool, policy, knob)
    assert len({e for _, _, e in expected.values()}) >= 2, "rows should leave at different exits"
    app = make_app(model, policy=policy, threshold=knob, batching="layer", max_batch=8)
    with serving(app) as url:
        answered = asyncio.run(clients(url, pool, 8, 3, seed=5))
    assert len(answered) == 8 * 3
    for batch, r in answered:
        assert r.status_code == 200, r.text
        for text, got in zip(batch, r.json()["predictions"]):
            label, _, exit_layer = expected[text]
            assert (got["label"], got["exit_layer"]) == (label, exit_layer)


def test_class_means_answers_are_offline_prediction_alone(tiny):
    """A model with fitted class means served under ``class-means``: every answer is predict([text]) alone (texts whose
    nearest distance at some exit lies within 1e-4 of the knob are left out: padding noise may flip them)."""
    from geep.evaluation.fit_means import fit_class_means

    model, texts, _, _, _ = tiny
    model = copy.deepcopy(model)
    labels = torch.randint(0, 3, (len(texts),), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        model.set_class_means(fit_class_means(model, model.tokenize(texts), labels), rows=len(texts), source="tiny")
    nearest = all_exit_logits(model, texts, batch_size=16).logits[:, :-1, 3:].min(-1).values  # (N, E-1)
    knob = float(nearest[:, 1].median())
    pool = [t for t, ok in zip(texts, ((nearest - knob).abs() > 1e-4).all(1).tolist()) if ok]
    assert len(pool) >= 40
    expected = offline(model, pool, "class-means", knob)
    assert len({e for _, _, e in expected.values()}) >= 2, "rows should leave at different exits"
    app = make_app(model, policy="class-means", threshold=knob, batching="layer", max_batch=8)
    with serving(app) as url:
        answered = asyncio.run(clients(url, pool, 8, 3, seed=5))
    assert len(answered) == 8 * 3
    for batch, r in answered:
        assert r.status_code == 200, r.text
        for text, got in zip(batch, r.json()["predictions"]):
            label, _, exit_layer = expected[text]
            assert (got["label"], got["exit_layer"]) == (label, exit_layer)
