"""``oracle`` (reporting only): each row exits at the earliest exit whose prediction is its true label (multi-label:
its whole true label set; token classification: every tagged token's tag, the sentence-level oracle of SENTEE),
else at L. It reads the labels, so it is an upper bound on what any policy could reach
with these exits; no knob."""

from __future__ import annotations

import torch
from torch import Tensor

from geep.errors import GeepError
from geep.policies.base import Memory, Policy


class OraclePolicy(Policy):
    name = "oracle"
    needs_labels = True
    tasks = ("classification", "multi-label", "token-classification")
    reads = "the true labels"

    def start(self, batch_size: int, device: torch.device, labels: Tensor | None = None) -> Memory:
        if labels is None:
            raise GeepError("the oracle policy needs the true labels (a label column)")
        multi = self.layout.task == "multi-label"
        token = self.layout.task == "token-classification"
        if labels.shape[:1] != (batch_size,) or labels.dim() != (2 if multi or token else 1):
            raise ValueError(f"labels of shape {tuple(labels.shape)} for {batch_size} rows")
        return {"labels": labels.to(device=device, dtype=torch.bool if multi else torch.long)}

    def decide(self, logits: Tensor, knob: float | None, memory: Memory) -> tuple[Tensor, Memory]:
        if self.layout.task == "token-classification":  # every tagged token right (-100: no tag there)
            tags, _ = self.layout.token_outputs(logits)  # (B, M, C)
            labels = memory["labels"]  # (B, M)
            return ((tags.argmax(-1) == labels) | (labels < 0)).all(-1), memory
        outputs = self.layout.task_outputs(logits)
        if self.layout.task == "multi-label":
            return ((outputs >= 0) == memory["labels"]).all(-1), memory
        return outputs.argmax(-1) == memory["labels"], memory
