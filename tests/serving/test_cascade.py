"""A cascade served: rows of many requests batched layer by layer through both members (a row moving on joins the
next member's pool), every answer -- label, exit member and layer, probabilities -- what offline prediction gives
the text alone, at fp32 and int8."""

from __future__ import annotations

import asyncio

import pytest
import torch

from geep.inference import predict
from geep.inference.runs import all_exit_logits
from geep.modeling.cascade import Cascade
from tests.helpers import random_texts, tiny_member, widest_gap
from tests.serving.conftest import WAIT_S, client, make_app, serving
from tests.serving.test_app import clients

TEXTS = random_texts(64, seed=21, max_words=30)


@pytest.fixture(scope="module")
def cascade(tmp_path_factory):
    d = tmp_path_factory.mktemp("served-cascade")
    tiny_member(d / "small", 1, [1], seed=0, texts=TEXTS)
    tiny_member(d / "large", 3, [1, 2, 3], seed=1, texts=TEXTS)
    return Cascade.from_members([d / "small", d / "large"])


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_served_answers_are_offline_answers_of_each_text_alone(cascade, precision):
    logits = all_exit_logits(cascade, TEXTS, precision=precision).logits
    theta = widest_gap(logits[:, 0].softmax(-1).max(-1).values)
    expected = {}
    for text in TEXTS:
        one = predict(cascade, [text], policy="cascade", knob=theta, precision=precision)
        expected[text] = (one.labels[0], int(one.exit_layer[0]), int(one.exit_member[0]), one.probabilities[0])
    assert {m for _, _, m, _ in expected.values()} == {1, 2}
    app = make_app(cascade, policy="cascade", threshold=theta, max_batch=64, max_wait_ms=2, precision=precision)
    with serving(app) as url:
        answered = asyncio.run(clients(url, TEXTS, 8, 3, seed=7))
        with client(url) as http:  # one request of all 64 texts: one batch of 64 at layer 0
            whole = http.post("/predict", json={"inputs": TEXTS, "return_probabilities": True}, timeout=WAIT_S)
            info = http.get("/info").json()
    assert info["num_layers"] == 4 and info["exit_layers"] == [1, 2, 3, 4] and len(info["members"]) == 2
    answered.append((TEXTS, whole))
    for batch, r in answered:
        assert r.status_code == 200, r.text
        assert r.json()["policy"] == "cascade" and r.json()["threshold"] == pytest.approx(theta)
        for text, got in zip(batch, r.json()["predictions"]):
            label, layer, member, probabilities = expected[text]
            assert (got["label"], got["exit_layer"], got["exit_member"]) == (label, layer, member)
            served = torch.tensor([got["probabilities"][name] for name in cascade.label_names])
            torch.testing.assert_close(served, probabilities, atol=1e-5, rtol=0)
