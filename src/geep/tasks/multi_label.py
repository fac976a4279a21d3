"""``multi-label``: a set of labels of C per text (tags, topics, moderation categories). One sigmoid per label,
binary cross entropy per exit, distillation by the per-label binary KL divergence of the sigmoids; the answer is the
set of labels whose probability is at least 0.5; micro-F1 (primary) and macro-F1 from scikit-learn, and subset
accuracy (every label of the row right).

Labels are read from a list column (JSON lists, parquet lists, a ``datasets`` sequence) or from a string of names
joined by a separator (``--label-separator``, default ``,``). An explicit empty list is a row to which no label
applies; a missing value (null, an empty string) is a row without a label and an error, as is a label the model never
saw at training.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from sklearn.metrics import f1_score
from torch import Tensor

from geep.errors import GeepError
from geep.tasks.base import Answers, Task, as_tensor, detached, named

THRESHOLD = 0.5  # a label is in a row's set when its probability is at least this
DEFAULT_SEPARATOR = ","


def binary_kl(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """KL(Bern(p_T) || Bern(p_S)) per element, from log-sigmoids (no log of an underflowed probability)."""
    p_t = torch.sigmoid(teacher_logits)
    log_t, log_not_t = F.logsigmoid(teacher_logits), F.logsigmoid(-teacher_logits)
    log_s, log_not_s = F.logsigmoid(student_logits), F.logsigmoid(-student_logits)
    return p_t * (log_t - log_s) + (1 - p_t) * (log_not_t - log_not_s)


@dataclass(frozen=True)
class MultiLabel(Task):
    separator: str = DEFAULT_SEPARATOR

    name = "multi-label"
    primary = "micro_f1"
    metric_names = ("micro_f1", "macro_f1", "accuracy")
    prediction_fields = ("prediction", "probabilities")
    verify_rule = "margin"

    @classmethod
    def check_label_names(cls, names: Sequence[str]) -> None:
        if len(names) < 2:
            raise GeepError(f"a multi-label model needs at least 2 labels, got {list(names)}")

    def read_labels(self, values: Sequence[Any], source: str) -> list[list[str]]:
        out = []
        for row, value in enumerate(values, 1):
            if value is None or (isinstance(value, str) and not value.strip()):
                raise GeepError(f"{source}: data row {row} has no label (a multi-label row lists its labels; an "
                                "empty list [] says none applies)")
            if isinstance(value, str):
                names = [part.strip() for part in value.split(self.separator)]
            elif isinstance(value, (list, tuple)):
                names = ["" if v is None else str(v).strip() for v in value]
            else:
                names = [str(value).strip()]
            if any(not name for name in names):
                raise GeepError(f"{source}: data row {row} has an empty label name in {str(value)[:60]!r}")
            out.append(sorted(set(names)))
        return out

    @classmethod
    def vocabulary(cls, labels: Sequence) -> list[str]:
        return sorted({name for names in labels for name in names})

    def targets(self, labels: Sequence | Tensor, source: str = "labels") -> Tensor:
        if isinstance(labels, Tensor):
            return labels.float()
        index = {name: i for i, name in enumerate(self.label_names)}
        unknown = sorted({name for names in labels for name in names if name not in index})
        if unknown:
            raise GeepError(f"{source}: label(s) never seen in training: {named(unknown)}; known labels: "
                            f"{named(self.label_names)}")
        out = torch.zeros((len(labels), len(self.label_names)))
        for row, names in enumerate(labels):
            out[row, [index[name] for name in names]] = 1.0
        return out  # (N, C) multi-hot

    def strata(self, labels: Sequence) -> list:
        return [names[0] if names else "" for names in labels]  # the first label name: kept in proportion

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(outputs, targets)

    def per_exit_loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        per = F.binary_cross_entropy_with_logits(outputs, targets.expand_as(outputs), reduction="none")  # (S, B, C)
        return per.mean((1, 2))

    def distillation(self, student: Tensor, teacher: Tensor, temperature: float = 1.0) -> Tensor:
        """sum over the students of the per-label binary KL of the sigmoids, averaged over labels and rows (as the
        binary cross entropy is); at a temperature t the logits are divided by t and the sum scaled by t^2."""
        teacher = detached(teacher, temperature)
        if temperature != 1.0:
            student, teacher = student / temperature, teacher / temperature
        total = binary_kl(student, teacher.expand_as(student)).mean((1, 2)).sum()
        return total if temperature == 1.0 else total * temperature**2

    def exit_is_right(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """1 where the exit's whole label set is the true one, else 0."""
        return ((outputs >= 0) == (targets > 0.5)).all(-1).to(outputs.dtype)  # (S, B); sigmoid >= 0.5 <=> logit >= 0

    def answer(self, outputs: Tensor) -> Answers:
        probabilities = torch.sigmoid(outputs.float())  # (F, C)
        return Answers(probabilities, probabilities >= THRESHOLD)

    def written(self, predictions: Tensor, probabilities: Tensor) -> list[list[str]]:
        return [[self.label_names[i] for i, on in enumerate(row) if on] for row in predictions.tolist()]

    def row(self, prediction: Any, probabilities: Sequence[float]) -> dict[str, Any]:
        return {"prediction": prediction, "probabilities": dict(zip(self.label_names, probabilities))}

    def metrics(self, predictions: Tensor, targets: Tensor) -> dict[str, float]:
        y = (as_tensor(targets, torch.float32) > 0.5).cpu().numpy()
        p = as_tensor(predictions, torch.bool).cpu().numpy()
        if not len(y):
            return {name: 0.0 for name in self.metric_names}
        return {"micro_f1": float(f1_score(y, p, average="micro", zero_division=0)),
                "macro_f1": float(f1_score(y, p, average="macro", zero_division=0)),
                "accuracy": float((y == p).all(1).mean())}
