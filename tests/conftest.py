"""Fixtures: tiny random models built in the tests (no network, seconds each). Helpers are in tests/helpers.py."""

from __future__ import annotations

import os
from pathlib import Path

# The commands the tests start (the SMOKE demo, `geep serve`, Ray's workers) run their tiny models at one thread too:
# set before torch is imported, so every child inherits it. Two threads on a busy 2-core machine only wait on each
# other (under two CPU-bound processes the SMOKE demo's 4 training steps took 3 minutes).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import psutil
import pytest
import torch
from transformers import BertModel

from geep.modeling.config import GeepConfig
from geep.modeling.model import MultiExitClassifier
from tests.helpers import tiny_bert_config, tiny_tokenizer


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Tiny matrices: threads only contend (on a shared 2-core machine, up to 25x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


LEFTOVER_GRACE_S = 30.0  # how long processes that are already stopping (Ray's, after ray.shutdown) may take


@pytest.fixture(autouse=True, scope="session")
def no_process_outlives_the_suite():
    """After the last test, no process the suite started is still running: servers, Ray's processes, commands run
    by the tests. Any left after a grace period are killed, and the session fails naming them."""
    yield
    me = psutil.Process()
    _, alive = psutil.wait_procs(me.children(recursive=True), timeout=LEFTOVER_GRACE_S)
    alive = [p for p in alive if _running(p)]
    if not alive:
        return
    names = []
    for process in alive:
        try:
            names.append(f"{process.pid} {' '.join(process.cmdline())[:120]}")
            process.kill()
        except psutil.NoSuchProcess:
            pass
    if names:
        pytest.fail(f"{len(names)} process(es) started by the tests outlived them (killed now): " + "; ".join(names))


def _running(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory) -> Path:
    """A saved tiny random BertModel + tokenizer directory (4 layers, hidden 32)."""
    directory = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    BertModel(tiny_bert_config()).save_pretrained(directory)
    tiny_tokenizer(directory).save_pretrained(directory)
    return directory


@pytest.fixture
def make_model(tmp_path):
    """Builds a tiny MultiExitClassifier in eval mode: make_model(head=..., pooling=..., exit_layers=...)."""

    def make(num_layers: int = 4, num_labels: int = 3, seed: int = 0, **config_kwargs) -> MultiExitClassifier:
        torch.manual_seed(seed)
        encoder = BertModel(tiny_bert_config(num_layers))
        config_kwargs.setdefault("max_length", 64)  # the tiny config's positions
        config = GeepConfig(num_layers=num_layers, label_names=[f"c{i}" for i in range(num_labels)],
                            **config_kwargs)
        model = MultiExitClassifier(encoder, config, tiny_tokenizer(tmp_path / f"tok{seed}"))
        return model.eval()

    return make
