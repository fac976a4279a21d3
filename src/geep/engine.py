"""Runs a multi-exit model over texts: tokenising, length-sorted batching, outputs in input order.

Every policy is fed batches in the same order (rows sorted by token length), so comparisons between policies
measure the exit mechanism, not the padding.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Sequence

import torch
from torch import Tensor

if TYPE_CHECKING:
    from geep.model import MultiExitClassifier, PredictionOutput

logger = logging.getLogger(__name__)


def length_order(lengths: Sequence[int]) -> list[int]:
    """Row indices sorted by length (stable, so equal lengths keep input order)."""
    return sorted(range(len(lengths)), key=lambda i: lengths[i])


def pad_batch(encoded: dict[str, list[list[int]]], rows: Sequence[int], pad_id: int,
              device: torch.device) -> dict[str, Tensor]:
    """input_ids, attention_mask (and token_type_ids) (B, T) for ``rows``, right padded to their longest."""
    ids = [encoded["input_ids"][i] for i in rows]
    T = max(len(x) for x in ids)
    out = {
        "input_ids": torch.full((len(ids), T), pad_id, dtype=torch.long),
        "attention_mask": torch.zeros((len(ids), T), dtype=torch.long),
    }
    if "token_type_ids" in encoded:
        out["token_type_ids"] = torch.zeros((len(ids), T), dtype=torch.long)
    for r, i in enumerate(rows):
        n = len(encoded["input_ids"][i])
        out["input_ids"][r, :n] = torch.tensor(encoded["input_ids"][i])
        out["attention_mask"][r, :n] = 1
        if "token_type_ids" in encoded:
            out["token_type_ids"][r, :n] = torch.tensor(encoded["token_type_ids"][i])
    return {k: v.to(device) for k, v in out.items()}


@torch.inference_mode()
def predict(model: "MultiExitClassifier", texts: str | Sequence[str], text_pairs: str | Sequence[str] | None = None,
            batch_size: int = 32) -> "PredictionOutput":
    """Runs every layer and the teacher on each row (the ``full`` policy)."""
    from geep.model import PredictionOutput

    if isinstance(texts, str):
        texts = [texts]
    if isinstance(text_pairs, str):
        text_pairs = [text_pairs]
    model.eval()
    encoded = model.tokenize(texts, text_pairs)
    n = len(texts)
    C, L = model.config.num_labels, model.num_layers
    probabilities = torch.zeros((n, C))
    exit_layers = torch.full((n,), L, dtype=torch.long)
    order = length_order([len(x) for x in encoded["input_ids"]])
    pad_id = model.tokenizer.pad_token_id or 0
    for start in range(0, n, batch_size):
        rows = order[start:start + batch_size]
        batch = pad_batch(encoded, rows, pad_id, model.device)
        state = model.embed(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
        state = model.run_layers(state, L)
        probabilities[torch.tensor(rows)] = model.exit_logits(state).float().softmax(-1).cpu()
    label_ids = probabilities.argmax(-1)
    return PredictionOutput([model.label_names[i] for i in label_ids.tolist()], label_ids, probabilities, exit_layers)
