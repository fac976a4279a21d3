"""A real uvicorn on 127.0.0.1 (a free port, in a thread) over a tiny random model, and test doubles of the
backend: one whose layers can be held on an Event, one that fails a chosen step. Every wait has a timeout."""

from __future__ import annotations

import asyncio
import math
import threading
from contextlib import contextmanager

import httpx
import pytest
import torch
import uvicorn
from transformers import BertModel

from geep.inference import all_exit_logits
from geep.modeling.config import GeepConfig
from geep.modeling.model import MultiExitClassifier
from geep.policies import entropy
from geep.runtime.torch_backend import TorchBackend
from geep.serving import ServeSettings, bind, create_app
from tests import helpers
from tests.helpers import make_decisive

WAIT_S = 60.0  # the bound on every wait in these tests (a shared 2-core machine can be slow)
FOREVER_MS = 600_000.0  # a max wait no test reaches: batches then run only when full


@contextmanager
def serving(app):
    """Runs ``app`` under uvicorn in a thread on a free port; yields its base URL once the worker is warm."""
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        assert app.state.worker.ready.wait(WAIT_S), "the worker did not warm up"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(WAIT_S)
        sock.close()
    assert not thread.is_alive(), "the server did not stop"


async def until(condition, timeout: float = WAIT_S) -> None:
    """Polls ``condition`` (every 10 ms) until it holds; fails after ``timeout``."""
    async def poll():
        while not condition():
            await asyncio.sleep(0.01)
    await asyncio.wait_for(poll(), timeout)


def client(url: str, **kwargs) -> httpx.Client:
    return httpx.Client(base_url=url, timeout=WAIT_S, **kwargs)


class HeldBackend(TorchBackend):
    """The model's backend, with a gate: while ``hold`` is set, a step that runs from layer ``hold_from`` or deeper
    waits in ``run_layers`` until ``release`` is set (``holding`` says one is waiting). Records every step as
    (start layer, end layer, row ids)."""

    def __init__(self, model, hold_from: int = 1):
        super().__init__(model)
        self.hold_from = hold_from
        self.hold, self.holding, self.release = threading.Event(), threading.Event(), threading.Event()
        self.steps: list[tuple[int, int, list[int]]] = []

    def run_layers(self, state, to_layer):
        self.steps.append((state.layer, to_layer, state.row_ids.tolist()))
        if self.hold.is_set() and state.layer >= self.hold_from:
            self.holding.set()
            assert self.release.wait(WAIT_S), "never released"
        return super().run_layers(state, to_layer)


class FailingBackend(TorchBackend):
    """The model's backend; the first step from layer ``fail_from`` or deeper after ``armed`` is set raises."""

    def __init__(self, model, fail_from: int = 1):
        super().__init__(model)
        self.fail_from, self.armed = fail_from, threading.Event()

    def run_layers(self, state, to_layer):
        if self.armed.is_set() and state.layer >= self.fail_from:
            self.armed.clear()
            raise RuntimeError("forced failure\nin a step")
        return super().run_layers(state, to_layer)


def first_exit_scores(model, texts):
    """Each text's normalised entropy at the first exit (what fastbert compares with its knob)."""
    logits = all_exit_logits(model, texts, batch_size=16).logits[:, 0]  # (N, C)
    return (entropy(logits) / math.log(logits.shape[-1])).tolist()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny decisive model (4 layers, exits 1-4, 3 labels, max length 24), its texts, and a fastbert knob in the
    widest gap of their first-exit scores: ``early`` texts leave at exit 1, ``late`` ones do not."""
    torch.manual_seed(0)
    model = MultiExitClassifier(BertModel(helpers.tiny_bert_config(4)),
                                GeepConfig(num_layers=4, label_names=["c0", "c1", "c2"], max_length=24),
                                helpers.tiny_tokenizer(tmp_path_factory.mktemp("tok"))).eval()
    texts = helpers.random_texts(80, seed=3, max_words=40)  # some longer than the max length: truncated
    make_decisive(model, texts)
    scores = sorted(first_exit_scores(model, texts))
    i = max(range(len(scores) // 3, 2 * len(scores) // 3), key=lambda j: scores[j + 1] - scores[j])
    knob = (scores[i] + scores[i + 1]) / 2
    assert scores[i + 1] - scores[i] > 1e-3, "no clear gap between the texts' scores"
    by_text = dict(zip(texts, first_exit_scores(model, texts)))
    early = [t for t in texts if by_text[t] <= knob]
    late = [t for t in texts if by_text[t] > knob]
    return model, texts, knob, early, late


def make_app(model, backend=None, **settings):
    """create_app over ``model`` with ServeSettings(**settings)."""
    return create_app(model, ServeSettings(**settings), backend=backend)


def safe_texts(model, texts, policy: str, knob) -> list[str]:
    """The texts whose decisions cannot flip by float noise at any exit before the last (a batch's padding moves
    logits by ~1e-7): scores at least 1e-4 from the knob (fastbert, geep-verify's continuation threshold), top two
    logits at least 1e-4 apart (pabee)."""
    logits = all_exit_logits(model, texts, batch_size=16).logits[:, :-1]  # (N, E-1, C)
    N, E, C = logits.shape
    if policy in ("fastbert", "geep-verify"):
        t = knob if policy == "fastbert" else knob.continue_threshold
        score = (entropy(logits.reshape(-1, C)) / math.log(C)).view(N, E)
        ok = ((score - t).abs() > 1e-4).all(1)
    elif policy == "pabee":
        top2 = logits.topk(2, dim=-1).values
        ok = ((top2[..., 0] - top2[..., 1]) > 1e-4).all(1)
    else:
        ok = torch.ones(N, dtype=torch.bool)
    return [t for t, keep in zip(texts, ok.tolist()) if keep]
