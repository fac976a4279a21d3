"""The hashee policy served: every answer is offline prediction of that text alone, at fp32 and int8 (tokens halt
inside the backend step the worker runs, the same step offline prediction runs)."""

from __future__ import annotations

import asyncio
import copy

import pytest
import torch

from geep.inference import predict
from geep.modeling.token_hash import random_hash
from tests.serving.conftest import make_app, serving
from tests.serving.test_app import clients


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_served_hashee_answers_are_offline_answers_of_each_text_alone(tiny, precision):
    model, texts, _, _, _ = tiny
    model = copy.deepcopy(model)
    model.set_token_hash(random_hash(model.backbone.config.vocab_size, model.num_layers,
                                     model.tokenizer.all_special_ids, seed=0))
    pool = texts[:24]
    expected = {}
    for text in pool:
        one = predict(model, [text], policy="hashee", precision=precision)
        expected[text] = (one.labels[0], int(one.exit_layer[0]), one.probabilities[0])
    app = make_app(model, policy="hashee", max_batch=8, precision=precision)
    with serving(app) as url:
        answered = asyncio.run(clients(url, pool, 8, 2, seed=5))
    assert len(answered) == 16
    for batch, r in answered:
        assert r.status_code == 200, r.text
        for text, got in zip(batch, r.json()["predictions"]):
            label, exit_layer, probabilities = expected[text]
            assert (got["label"], got["exit_layer"]) == (label, exit_layer) and exit_layer == model.num_layers
            served = torch.tensor([got["probabilities"][name] for name in model.label_names])
            torch.testing.assert_close(served, probabilities, atol=1e-5, rtol=0)  # as test_app.py: the fp32 head's noise
