"""`geep serve` of a token classifier: /predict answers each text's words, tags, per-word exits and entity spans,
equal to geep predict of that text alone (windows included), under concurrent clients; an empty sentence is one
line, 422."""

from __future__ import annotations

import asyncio
import random

import httpx

from geep.data.token_data import TokenData, make_windows
from geep.inference import predict
from geep.inference.rows import sentence_answers
from tests.policies.test_token_policies import token_model
from tests.helpers import WORDS
from tests.serving.conftest import WAIT_S, client, make_app, serving


def alone(model, text: str, knob: float) -> dict:
    words = text.split()
    windows = make_windows(model.tokenizer, TokenData([words], None, "t"), model.max_length)
    out = predict(model, windows.texts, policy="sentee", knob=knob)
    return sentence_answers(model.task, windows, [words], out.label_ids, out.exit_layer)[0]


def test_served_tags_equal_offline_prediction_alone(tmp_path):
    model = token_model(tmp_path)
    rng = random.Random(0)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 40))) for _ in range(12)]
    knob = 0.9
    expected = {t: alone(model, t, knob) for t in texts}
    assert any(len(r["exit_layers"]) > 22 for r in expected.values())  # some texts span two windows
    app = make_app(model, policy="sentee", threshold=knob, max_batch=8)

    async def clients():
        async def one(i):
            r_ = random.Random(i)
            async with httpx.AsyncClient(base_url=url, timeout=WAIT_S) as http:
                batch = [r_.choice(texts) for _ in range(r_.randint(1, 5))]
                return batch, await http.post("/predict", json={"inputs": batch})
        return await asyncio.gather(*(one(i) for i in range(8)))

    with serving(app) as url:
        answered = asyncio.run(clients())
        with client(url) as http:
            bad = http.post("/predict", json={"inputs": ["good movie", "   "]})
    for batch, r in answered:
        assert r.status_code == 200, r.text
        for text, got in zip(batch, r.json()["predictions"]):
            assert got == expected[text]
    assert bad.status_code == 422 and "empty sentence" in bad.json()["detail"]
