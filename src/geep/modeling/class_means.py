"""Class means of each exit's pooled representation (Gormez & Koyuncu, "Class Means as an Early Exit Decision
Mechanism", 2021, arXiv:2103.01148), fitted on training rows after training and stored beside the model.

At every exit k the representation r_k(x) is the exit's pooled h_k (the pooling its head uses, over
``backbone.output(h_k)``), scaled to unit length; the class mean of class c at exit k is
mu_{k,c} = mean of r_k(x) over the training rows of class c. An exit's distances are d_{k,c}(x) = ||r_k(x) - mu_{k,c}||_2
(Euclidean, as the paper's nearest-mean rule). Unit length is geep's choice, not the paper's: it puts every layer's
distances on one scale (0 <= d <= 2), so one knob means the same at every exit. Fitting them:
``geep.evaluation.fit_means``.

Stored as ``class_means.safetensors`` (one tensor ``means`` (|E|, C, H), no pickle); the model appends the C
distances after its other outputs at every exit (``MultiExitClassifier.exit_logits``), so every backend, the replay
of recorded outputs, and every surface read them as they read a learned exit's signal. FLOPs count them as the
signals are counted, a Linear H -> C per head call (2HC per row): the re-pooling (about TH) and a third of the
distance arithmetic (3HC in all) are left out, well under 1% of a layer's 2T(4H^2 + 2HI) at BERT sizes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from geep.errors import GeepError
from geep.io import atomic_path
from geep.modeling.heads import mean_pool

MEANS_NAME = "class_means.safetensors"


def representation(hidden: Tensor, attention_mask: Tensor, pooling: str) -> Tensor:
    """r_k: the pooled exit input scaled to unit length. hidden (B, T, H), attention_mask (B, T) -> (B, H) float32."""
    pooled = hidden[:, 0] if pooling == "first" else mean_pool(hidden, attention_mask)  # (B, H)
    return F.normalize(pooled.float(), dim=-1)


class ClassMeans(nn.Module):
    """The fitted means (|E|, C, H), a non-persistent buffer: it moves with the model, and stays out of its weights
    (model.safetensors is unchanged by fitting)."""

    def __init__(self, means: Tensor, exit_layers: Sequence[int]) -> None:
        super().__init__()
        self.exit_layers = list(exit_layers)
        self.register_buffer("means", means.float(), persistent=False)  # (|E|, C, H)

    @property
    def num_classes(self) -> int:
        return self.means.shape[1]

    def distances(self, k: int, hidden: Tensor, attention_mask: Tensor, pooling: str) -> Tensor:
        """d_{k,c} for every row and class: hidden (B, T, H) -> (B, C) float32, each row on its own."""
        r = representation(hidden, attention_mask, pooling)  # (B, H)
        mu = self.means[self.exit_layers.index(k)]  # (C, H)
        return (r[:, None, :] - mu[None]).norm(dim=-1)  # (B, C)

    def save(self, path: Path, label_names: Sequence[str]) -> None:
        with atomic_path(path) as tmp:
            save_file({"means": self.means.detach().cpu().contiguous()}, str(tmp),
                      metadata={"exit_layers": json.dumps(self.exit_layers), "labels": json.dumps(list(label_names))})


def load_class_means(path: Path, exit_layers: Sequence[int], num_classes: int, hidden_size: int) -> ClassMeans:
    """Reads ``path``; GeepError (one line) when it is missing, unreadable or fitted for another shape of model."""
    if not path.is_file():
        raise GeepError(f"{path.parent} names class means in config.json, but {path.name} is missing; fit them "
                        f"again with `geep fit-means --model {path.parent} --train DATA`")
    try:
        means = load_file(str(path))["means"]
    except Exception as e:  # safetensors' own errors for a truncated or foreign file; a missing key
        raise GeepError(f"cannot read {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    expected = (len(exit_layers), num_classes, hidden_size)
    if tuple(means.shape) != expected:
        raise GeepError(f"{path} holds class means of shape {tuple(means.shape)}, but the model needs {expected} "
                        "(exits, classes, hidden size); fit them again with `geep fit-means`")
    return ClassMeans(means, exit_layers)


__all__ = ["ClassMeans", "MEANS_NAME", "load_class_means", "representation"]
