"""``regression``: a score per text or text pair (how similar two sentences are, what rating a review gets). The
head outputs one number, trained on the standardised target (the training targets' mean and standard deviation are
stored in the model's config); mean squared error per exit, distillation by the squared error to the teacher's
output; the answer is the de-standardised score; Pearson (primary) and Spearman correlation from SciPy.

A label that is not a number, NaN or infinite is an error naming its row. The distillation temperature has no
meaning for a score and is not applied.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from scipy.stats import pearsonr, spearmanr
from torch import Tensor

from geep.errors import GeepError
from geep.tasks.base import Answers, Task, as_tensor, detached, finite

STRATA = 10  # seeded splits keep the target's deciles in proportion


class Regression(Task):
    name = "regression"
    primary = "pearson"
    metric_names = ("pearson", "spearman")
    prediction_fields = ("prediction",)
    verify_rule = "pabee"

    @classmethod
    def check_label_names(cls, names: Sequence[str]) -> None:
        if names:
            raise GeepError(f"a regression model has no label names, got {list(names)}")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (math.isfinite(self.target_std) and self.target_std > 0 and math.isfinite(self.target_mean)):
            raise GeepError(f"a regression target needs a finite mean and a positive standard deviation, got mean "
                            f"{self.target_mean} and std {self.target_std}")

    @property
    def num_outputs(self) -> int:
        return 1

    def read_labels(self, values: Sequence[Any], source: str) -> list[float]:
        out = []
        for row, value in enumerate(values, 1):
            try:
                if isinstance(value, bool) or isinstance(value, (list, tuple, dict)):
                    raise ValueError
                number = float(value)
            except (TypeError, ValueError):
                raise GeepError(f"{source}: data row {row}'s label {str(value)[:40]!r} is not a number (a "
                                "regression label is a number)") from None
            if not math.isfinite(number):
                raise GeepError(f"{source}: data row {row}'s label is {value!r}; a regression label must be finite")
            out.append(number)
        return out

    @classmethod
    def vocabulary(cls, labels: Sequence) -> list[str]:
        return []

    @classmethod
    def scale(cls, labels: Sequence[float]) -> tuple[float, float]:
        """(mean, standard deviation) of the training targets; GeepError when they are all equal."""
        values = torch.tensor(list(labels), dtype=torch.float64)
        std = float(values.std(unbiased=False)) if len(values) else 0.0
        if not std > 0:
            raise GeepError(f"every regression label of the training data is {float(values[0]) if len(values) else '?'}"
                            "; a score to learn needs at least two different values")
        return float(values.mean()), std

    def targets(self, labels: Sequence | Tensor, source: str = "labels") -> Tensor:
        if isinstance(labels, Tensor):
            return labels.float()
        return torch.tensor(self.read_labels(labels, source), dtype=torch.float32)

    def train_targets(self, targets: Tensor) -> Tensor:
        return (targets - self.target_mean) / self.target_std

    def strata(self, labels: Sequence) -> list:
        order = sorted(range(len(labels)), key=lambda i: labels[i])
        out = [0] * len(labels)
        for rank, i in enumerate(order):
            out[i] = rank * STRATA // max(len(labels), 1)
        return out

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return F.mse_loss(outputs[..., 0], targets)

    def per_exit_loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return ((outputs[..., 0] - targets) ** 2).mean(1)  # (S, B) -> (S,)

    def distillation(self, student: Tensor, teacher: Tensor, temperature: float = 1.0) -> Tensor:
        teacher = detached(teacher, temperature)
        return ((student[..., 0] - teacher[..., 0]) ** 2).mean(1).sum()

    def exit_is_right(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """1 - tanh(|y_k - y|) in standardised units (BERxiT's target for regression): 1 when exit k is exactly
        right, towards 0 as it moves away."""
        return 1 - torch.tanh((outputs[..., 0] - targets).abs())  # (S, B)

    def answer(self, outputs: Tensor) -> Answers:
        scores = outputs[..., 0].float() * self.target_std + self.target_mean  # (F,)
        return Answers(outputs.new_zeros((outputs.shape[0], 0), dtype=torch.float32), scores)

    def written(self, predictions: Tensor, probabilities: Tensor) -> list[float]:
        return [float(v) for v in predictions.tolist()]

    def row(self, prediction: Any, probabilities: Sequence[float]) -> dict[str, Any]:
        return {"prediction": prediction}

    def metrics(self, predictions: Tensor, targets: Tensor) -> dict[str, float]:
        p = as_tensor(predictions, torch.float64).cpu().numpy()
        y = as_tensor(targets, torch.float64).cpu().numpy()
        if len(y) < 2 or p.std() == 0 or y.std() == 0:  # a constant has no correlation (SciPy warns and gives NaN)
            return {"pearson": 0.0, "spearman": 0.0}
        return {"pearson": finite(pearsonr(p, y).statistic), "spearman": finite(spearmanr(p, y).statistic)}
