"""Tiny models of every task, with and without the learned exit module, built in the tests."""

from __future__ import annotations

import pytest
import torch
from transformers import BertModel

from geep.modeling.config import GeepConfig
from geep.modeling.model import MultiExitClassifier
from tests.helpers import tiny_bert_config, tiny_tokenizer

LABELS = {"classification": ["c0", "c1", "c2"], "multi-label": ["sport", "stock", "vote"], "regression": []}


@pytest.fixture
def task_model(tmp_path):
    """task_model(task, exit_module="lte", seed=0, spread=3.0): a tiny MultiExitClassifier (4 layers) of ``task`` in
    eval mode. ``spread`` scales each head's output layer (and the exit module's), so a random model's exits and
    certainties really differ between rows."""

    def make(task: str, exit_module: str | None = "lte", seed: int = 0, spread: float = 3.0,
             **kwargs) -> MultiExitClassifier:
        torch.manual_seed(seed)
        scale = {"target_mean": 2.5, "target_std": 1.5} if task == "regression" else {}
        kwargs.setdefault("pooling", "mean")  # a random tiny encoder's first token barely differs between texts
        config = GeepConfig(num_layers=4, label_names=LABELS[task], task=task, exit_module=exit_module,
                            max_length=64, **scale, **kwargs)
        model = MultiExitClassifier(BertModel(tiny_bert_config(4)), config, tiny_tokenizer(tmp_path / f"tok{seed}"))
        with torch.no_grad():
            for head in model.heads.values():  # one score moves less between exits than C logits: spread it more
                head.classifier.weight.mul_(spread * (10 if task == "regression" else 1))
            if model.exit_module is not None:
                model.exit_module.linear.weight.mul_(spread)
        return model.eval()

    return make
