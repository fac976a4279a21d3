"""Fitting the class means of a trained model on its training rows (``geep fit-means``; the means and their
distances: ``geep.modeling.class_means``, after Gormez & Koyuncu 2021, arXiv:2103.01148)."""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import Tensor

from geep.errors import GeepError
from geep.modeling.class_means import ClassMeans, representation
from geep.modeling.model import MultiExitClassifier
from geep.tokens import Encoded, pad_batch

logger = logging.getLogger(__name__)


@torch.inference_mode()
def fit_class_means(model: MultiExitClassifier, encoded: Encoded, labels: Tensor, *,
                    batch_size: int = 32) -> ClassMeans:
    """mu_{k,c} over the rows of ``encoded`` (tokenised by the model) with class ids ``labels`` (N,), at fp32 on the
    model's device, every exit in one pass per batch. GeepError when a class has no row."""
    if model.config.task != "classification":
        raise GeepError(f"class means need classes: this is a {model.config.task} model")
    C, E = model.config.num_labels, model.exit_layers
    counts = torch.bincount(labels, minlength=C)
    empty = [model.label_names[c] for c in range(C) if counts[c] == 0]
    if empty:
        raise GeepError(f"no training row of class(es) {', '.join(map(repr, empty))}: every class needs rows to "
                        "have a mean")
    model.eval()
    device = model.device
    sums = torch.zeros((len(E), C, model.backbone.config.hidden_size), device=device)
    one_hot = F.one_hot(labels, C).float().to(device)  # (N, C)
    n = len(labels)
    for start in range(0, n, batch_size):
        rows = list(range(start, min(start + batch_size, n)))
        batch = pad_batch(encoded, rows, model.pad_token_id, device)
        state = model.embed(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
        for i, k in enumerate(E):
            state = model.run_layers(state, k)
            hidden = model.backbone.output(state.hidden)  # (B, T, H)
            r = representation(hidden, state.attention_mask, model.config.head_spec(k)[1])  # (B, H)
            sums[i] += one_hot[rows].T @ r  # (C, H)
    means = sums / counts.to(sums)[None, :, None]
    logger.info("class means fitted on %d rows (%s) at exits %s", n,
                ", ".join(f"{model.label_names[c]} {int(counts[c])}" for c in range(C)), E)
    return ClassMeans(means.cpu(), E)



__all__ = ["fit_class_means"]
