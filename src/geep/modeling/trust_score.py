"""Trust-score sets (Jiang, Kim, Guan & Gupta, "To Trust or Not to Trust a Classifier", NeurIPS 2018): per exit and
class, a bounded subset of the training rows' representations, fitted after training and stored beside the model.

At every exit k the representation r_k(x) is the one class means use (``geep.modeling.class_means.representation``:
the exit head's pooling of h_k, scaled to unit length). For class c the set H_{k,c} holds the representations of at
most M training rows of class c (a seeded uniform subset: the paper keeps every training row, geep bounds the set so
that its cost per row stays fixed), after the paper's alpha-filtering (Algorithm 1): of the set, the
floor(alpha * n_c) points with the largest distance to their k-th nearest neighbour in the set (k = min(10, n_c - 1),
the paper's k) are dropped, keeping at least one. The filter is computed within the bounded subset, not over every
training row: that is the simplification. alpha = 0 (the default, as in the authors' released code) keeps every
point.

An exit's outputs gain d_{k,c}(x) = min over H_{k,c} of ||r_k(x) - p||_2, the distance to the nearest point of each
class's set (C columns after the class-means distances, ``MultiExitClassifier.exit_logits``); the ``trust-score``
policy forms the paper's ratio from them (``geep.policies.trust_score``). Each row's distances are computed from that
row alone (a difference and a norm per point, no matrix product across rows), so they do not depend on its batch.

Stored as ``trust_score.safetensors`` (``points`` (|E|, C, M, H) float32, ``valid`` (|E|, C, M) bool: which of the M
slots hold a kept point; no pickle). FLOPs: 3H per point and row per head call (difference, square, sum), counted by
``geep.runtime.flops`` as ``trust_points``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from geep.errors import GeepError
from geep.io import atomic_path
from geep.modeling.class_means import representation

TRUST_NAME = "trust_score.safetensors"
DEFAULT_PER_CLASS = 256  # M: the most training rows of one class a set keeps
DEFAULT_ALPHA = 0.0  # the share of each set the paper's filter drops (0: none, as the authors' code by default)
NEIGHBOURS = 10  # the paper's k for the filter's k-NN radius


def filter_alpha(points: Tensor, alpha: float, neighbours: int = NEIGHBOURS) -> Tensor:
    """The paper's alpha-filter on one class's set (n, H): (n,) bool, False for the floor(alpha * n) points with the
    largest distance to their k-th nearest other point (k = min(neighbours, n - 1)); at least one point is kept."""
    n = points.shape[0]
    drop = min(int(alpha * n), n - 1)
    keep = torch.ones(n, dtype=torch.bool)
    if drop <= 0:
        return keep
    d = (points[:, None, :] - points[None, :, :]).norm(dim=-1)  # (n, n); 0 on the diagonal
    k = min(neighbours, n - 1)
    radius = d.sort(dim=1).values[:, k]  # (n,): column 0 is the point itself
    order = sorted(range(n), key=lambda i: (-float(radius[i]), i))  # largest radius first; ties: the earlier row
    keep[order[:drop]] = False
    return keep


class TrustSets(nn.Module):
    """The fitted sets, non-persistent buffers (they move with the model and stay out of model.safetensors):
    ``points`` (|E|, C, M, H) and ``valid`` (|E|, C, M)."""

    def __init__(self, points: Tensor, valid: Tensor, exit_layers: Sequence[int]) -> None:
        super().__init__()
        if points.shape[:3] != valid.shape or not bool(valid.any(-1).all()):
            raise GeepError("trust-score sets need a valid mask of their shape and at least one point per class")
        self.exit_layers = list(exit_layers)
        self.register_buffer("points", points.float(), persistent=False)  # (|E|, C, M, H)
        self.register_buffer("valid", valid.bool(), persistent=False)  # (|E|, C, M)

    @property
    def num_classes(self) -> int:
        return self.points.shape[1]

    @property
    def num_points(self) -> int:
        """C * M: the points every row is compared with at an exit (padded slots included: they are computed)."""
        return self.points.shape[1] * self.points.shape[2]

    def distances(self, k: int, hidden: Tensor, attention_mask: Tensor, pooling: str) -> Tensor:
        """d_{k,c}: each row's distance to the nearest kept point of each class's set at exit ``k``: hidden
        (B, T, H) -> (B, C) float32, each row on its own."""
        r = representation(hidden, attention_mask, pooling)  # (B, H)
        i = self.exit_layers.index(k)
        points, valid = self.points[i], self.valid[i]  # (C, M, H), (C, M)
        out = []
        for c in range(points.shape[0]):  # one class at a time: (B, M, H) at most
            d = (r[:, None, :] - points[c][None]).norm(dim=-1)  # (B, M)
            out.append(d.masked_fill(~valid[c][None], float("inf")).min(-1).values)  # (B,)
        return torch.stack(out, dim=-1)  # (B, C)

    def save(self, path: Path, label_names: Sequence[str], settings: dict) -> None:
        with atomic_path(path) as tmp:
            save_file({"points": self.points.detach().cpu().contiguous(),
                       "valid": self.valid.detach().cpu().contiguous()}, str(tmp),
                      metadata={"exit_layers": json.dumps(self.exit_layers), "labels": json.dumps(list(label_names)),
                                "settings": json.dumps(settings)})


def load_trust_sets(path: Path, exit_layers: Sequence[int], num_classes: int, hidden_size: int) -> TrustSets:
    """Reads ``path``; GeepError (one line) when it is missing, unreadable or fitted for another shape of model."""
    if not path.is_file():
        raise GeepError(f"{path.parent} names trust-score sets in config.json, but {path.name} is missing; fit them "
                        f"again with `geep fit-means --model {path.parent} --train DATA --statistics trust-score`")
    try:
        tensors = load_file(str(path))
        points, valid = tensors["points"], tensors["valid"]
    except Exception as e:  # safetensors' own errors for a truncated or foreign file; a missing key
        raise GeepError(f"cannot read {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    if points.dim() != 4 or (points.shape[0], points.shape[1], points.shape[3]) != (len(exit_layers), num_classes,
                                                                                   hidden_size):
        raise GeepError(f"{path} holds trust-score sets of shape {tuple(points.shape)}, but the model needs "
                        f"({len(exit_layers)}, {num_classes}, M, {hidden_size}) (exits, classes, points, hidden "
                        "size); fit them again with `geep fit-means --statistics trust-score`")
    return TrustSets(points, valid, exit_layers)


__all__ = ["DEFAULT_ALPHA", "DEFAULT_PER_CLASS", "TRUST_NAME", "TrustSets", "filter_alpha", "load_trust_sets"]
