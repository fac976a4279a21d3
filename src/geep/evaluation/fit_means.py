"""Fitting a trained model's representation statistics on its training rows (``geep fit-means``): the class means
(``geep.modeling.class_means``, after Gormez & Koyuncu 2021, arXiv:2103.01148) and the trust-score sets
(``geep.modeling.trust_score``, after Jiang et al., NeurIPS 2018). Both read each exit's unit-length pooled
representation of the rows, every exit in one pass per batch (:func:`representations`)."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from geep.errors import GeepError
from geep.modeling.class_means import ClassMeans, representation
from geep.modeling.model import MultiExitClassifier
from geep.modeling.trust_score import DEFAULT_ALPHA, DEFAULT_PER_CLASS, TrustSets, filter_alpha
from geep.tokens import Encoded, pad_batch

logger = logging.getLogger(__name__)

STATISTICS = ("class-means", "trust-score")  # what `geep fit-means --statistics` fits


def check_classes(model: MultiExitClassifier, labels: Tensor, what: str) -> Tensor:
    """The rows per class (C,); GeepError when the model is no classifier or a class has no row."""
    if model.config.task != "classification":
        raise GeepError(f"{what} need classes: this is a {model.config.task} model")
    C = model.config.num_labels
    counts = torch.bincount(labels, minlength=C)
    empty = [model.label_names[c] for c in range(C) if counts[c] == 0]
    if empty:
        raise GeepError(f"no training row of class(es) {', '.join(map(repr, empty))}: every class needs rows to "
                        f"have {what}")
    return counts


def representations(model: MultiExitClassifier, encoded: Encoded, rows: Sequence[int], batch_size: int
                    ) -> Iterator[tuple[list[int], list[Tensor]]]:
    """For each batch of ``rows`` (indices into ``encoded``): the batch's rows and r_k (B, H) at every exit k of E,
    in exit order, at fp32 on the model's device (one pass per batch, every exit on the way)."""
    model.eval()
    device = model.device
    for start in range(0, len(rows), batch_size):
        batch_rows = list(rows[start:start + batch_size])
        batch = pad_batch(encoded, batch_rows, model.pad_token_id, device)
        state = model.embed(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
        out = []
        for k in model.exit_layers:
            state = model.run_layers(state, k)
            hidden = model.backbone.output(state.hidden)  # (B, T, H)
            out.append(representation(hidden, state.attention_mask, model.config.head_spec(k)[1]))  # (B, H)
        yield batch_rows, out


@torch.inference_mode()
def fit_class_means(model: MultiExitClassifier, encoded: Encoded, labels: Tensor, *,
                    batch_size: int = 32) -> ClassMeans:
    """mu_{k,c} over the rows of ``encoded`` (tokenised by the model) with class ids ``labels`` (N,), at fp32 on the
    model's device, every exit in one pass per batch. GeepError when a class has no row."""
    counts = check_classes(model, labels, "class means")
    C, E = model.config.num_labels, model.exit_layers
    sums = torch.zeros((len(E), C, model.backbone.config.hidden_size), device=model.device)
    one_hot = F.one_hot(labels, C).float().to(model.device)  # (N, C)
    n = len(labels)
    for rows, reps in representations(model, encoded, range(n), batch_size):
        for i, r in enumerate(reps):
            sums[i] += one_hot[rows].T @ r  # (C, H)
    means = sums / counts.to(sums)[None, :, None]
    logger.info("class means fitted on %d rows (%s) at exits %s", n,
                ", ".join(f"{model.label_names[c]} {int(counts[c])}" for c in range(C)), E)
    return ClassMeans(means.cpu(), E)


@torch.inference_mode()
def fit_trust_sets(model: MultiExitClassifier, encoded: Encoded, labels: Tensor, *,
                   per_class: int = DEFAULT_PER_CLASS, alpha: float = DEFAULT_ALPHA, seed: int = 0,
                   batch_size: int = 32) -> tuple[TrustSets, dict]:
    """The trust-score sets of the rows of ``encoded`` with class ids ``labels`` (N,): of each class, at most
    ``per_class`` rows drawn uniformly (seeded), their r_k at every exit, alpha-filtered per exit and class
    (``geep.modeling.trust_score.filter_alpha``). Returns the sets and the settings config.json records. GeepError
    when a class has no row, or ``per_class`` / ``alpha`` are out of range."""
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
        raise GeepError(f"--trust-per-class must be a positive integer, got {per_class!r}")
    if not 0.0 <= alpha < 1.0:
        raise GeepError(f"--trust-alpha must be in [0, 1), got {alpha:g}")
    counts = check_classes(model, labels, "trust-score sets")
    C, E, H = model.config.num_labels, model.exit_layers, model.backbone.config.hidden_size
    generator = torch.Generator().manual_seed(seed)
    chosen = []  # per class: its rows, in the seeded order
    for c in range(C):
        of_class = torch.nonzero(labels == c).flatten()
        chosen.append(of_class[torch.randperm(len(of_class), generator=generator)[:per_class]].tolist())
    M = max(len(rows) for rows in chosen)
    order = [row for rows in chosen for row in rows]
    slot = {row: (c, j) for c, rows in enumerate(chosen) for j, row in enumerate(rows)}
    points = torch.zeros((len(E), C, M, H))
    valid = torch.zeros((len(E), C, M), dtype=torch.bool)
    for rows, reps in representations(model, encoded, order, batch_size):
        for b, row in enumerate(rows):
            c, j = slot[row]
            for i, r in enumerate(reps):
                points[i, c, j] = r[b].cpu()
    for c, rows in enumerate(chosen):
        for i in range(len(E)):
            valid[i, c, : len(rows)] = filter_alpha(points[i, c, : len(rows)], alpha)
    settings = {"rows": len(order), "per_class": per_class, "alpha": float(alpha), "seed": seed}
    logger.info("trust-score sets fitted on %d rows (%s; at most %d per class, alpha %g) at exits %s", len(order),
                ", ".join(f"{model.label_names[c]} {len(rows)} of {int(counts[c])}" for c, rows in enumerate(chosen)),
                per_class, alpha, E)
    return TrustSets(points, valid, E), settings


__all__ = ["STATISTICS", "fit_class_means", "fit_trust_sets", "representations"]
