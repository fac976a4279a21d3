"""Querying the exit table with tokenised rows: each row's predicted exit distribution, before the model runs."""

from __future__ import annotations

import torch
from torch import Tensor

from geep.exit_table.table import ExitTable
from geep.tokens import Encoded, pad_batch

QUERY_ROWS = 1024  # rows padded and looked up together: bounds the (B, T, L) lookups' memory


def exit_distribution(table: ExitTable, encoded: Encoded, pad_id: int, chunk: int = QUERY_ROWS) -> Tensor:
    """Every row's predicted exit distribution q (N, L) float64 from its token ids (see ``ExitTable``), on the
    table's device; rows are padded ``chunk`` at a time."""
    n = len(encoded["input_ids"])
    parts = []
    for start in range(0, n, chunk):
        batch = pad_batch(encoded, range(start, min(n, start + chunk)), pad_id, table.device)
        parts.append(table.predict_distribution(batch["input_ids"], batch["attention_mask"]))
    if not parts:
        return torch.zeros((0, table.num_layers), dtype=torch.float64, device=table.device)
    return torch.cat(parts)
