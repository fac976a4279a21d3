"""``oracle`` (reporting only): each row exits at the earliest exit whose prediction is its true label, else at
L. It reads the labels, so it is an upper bound on what any policy could reach with these exits; no knob."""

from __future__ import annotations

import torch
from torch import Tensor

from geep.errors import GeepError
from geep.policies.base import Memory, Policy


class OraclePolicy(Policy):
    name = "oracle"
    needs_labels = True

    def start(self, batch_size: int, device: torch.device, labels: Tensor | None = None) -> Memory:
        if labels is None:
            raise GeepError("the oracle policy needs the true labels (a label column)")
        if labels.shape != (batch_size,):
            raise ValueError(f"labels of shape {tuple(labels.shape)} for {batch_size} rows")
        return {"labels": labels.to(device=device, dtype=torch.long)}

    def decide(self, logits: Tensor, knob: float | None, memory: Memory) -> tuple[Tensor, Memory]:
        return logits.argmax(-1) == memory["labels"], memory
