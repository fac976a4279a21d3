"""``classification``: one label of C per text. Softmax over the classes, cross entropy per exit, distillation by
the KL divergence of softmaxes (Hinton et al. 2015), the answer is the argmax; accuracy (primary) and macro-F1 from
scikit-learn."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from sklearn.metrics import f1_score
from torch import Tensor

from geep.errors import GeepError
from geep.tasks.base import Answers, Task, as_tensor, detached, named


def distillation_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """sum_k KL(p_T || p_k), batch-mean, with p_T detached (no gradient reaches T).

    At a temperature t != 1 both distributions are softmax(logits / t) and the sum is scaled by t^2, so its
    gradients keep their size as t changes (Hinton et al. 2015). student_logits (S, B, C), teacher_logits (B, C).
    """
    teacher_logits = detached(teacher_logits, temperature)
    if temperature != 1.0:
        student_logits, teacher_logits = student_logits / temperature, teacher_logits / temperature
    p_teacher = F.softmax(teacher_logits, dim=-1)  # (B, C)
    total = student_logits.new_zeros(())
    for logits in student_logits:  # S small terms; each is KL averaged over the batch
        total = total + F.kl_div(F.log_softmax(logits, dim=-1), p_teacher, reduction="batchmean")
    return total if temperature == 1.0 else total * temperature**2


def per_exit_cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """The batch-mean cross entropy of each slice of the leading axis: logits (S, B, C), labels (B,) -> (S,)."""
    S, B, C = logits.shape
    per_row = F.cross_entropy(logits.reshape(S * B, C), labels.repeat(S), reduction="none")  # (S*B,)
    return per_row.view(S, B).mean(1)


class Classification(Task):
    name = "classification"
    primary = "accuracy"
    metric_names = ("accuracy", "macro_f1")
    prediction_fields = ("prediction", "probability", "probabilities")
    verify_rule = "fastbert"

    @classmethod
    def check_label_names(cls, names: Sequence[str]) -> None:
        if len(names) < 2:
            raise GeepError(f"a classifier needs at least 2 labels, got {list(names)}")

    def read_labels(self, values: Sequence[Any], source: str) -> list[str]:
        for row, value in enumerate(values, 1):
            if isinstance(value, (list, tuple)):
                raise GeepError(f"{source}: data row {row} holds a list of labels ({str(value)[:40]}); a list "
                                "column is multi-label data: pass --task multi-label")
        return [str(v) for v in values]

    @classmethod
    def vocabulary(cls, labels: Sequence) -> list[str]:
        return sorted(set(labels))

    def targets(self, labels: Sequence | Tensor, source: str = "labels") -> Tensor:
        if isinstance(labels, Tensor):
            return labels.long()
        index = {name: i for i, name in enumerate(self.label_names)}
        unknown = sorted({str(label) for label in labels if isinstance(label, str) and label not in index})
        if unknown:
            raise GeepError(f"{source}: label(s) never seen in training: {named(unknown)}; known labels: "
                            f"{named(self.label_names)}")
        return torch.tensor([index[label] if isinstance(label, str) else int(label) for label in labels],
                            dtype=torch.long)

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(outputs, targets)

    def per_exit_loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return per_exit_cross_entropy(outputs, targets)

    def distillation(self, student: Tensor, teacher: Tensor, temperature: float = 1.0) -> Tensor:
        return distillation_kl(student, teacher, temperature)

    def exit_is_right(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """1 where the exit's argmax is the true class (BERxiT's target for classification), else 0."""
        return (outputs.argmax(-1) == targets).to(outputs.dtype)  # (S, B)

    def answer(self, outputs: Tensor) -> Answers:
        probabilities = outputs.float().softmax(-1)  # (F, C)
        return Answers(probabilities, probabilities.argmax(-1))

    def written(self, predictions: Tensor, probabilities: Tensor) -> list[str]:
        return [self.label_names[i] for i in predictions.tolist()]

    def row(self, prediction: Any, probabilities: Sequence[float]) -> dict[str, Any]:
        return {"prediction": prediction, "probability": probabilities[self.label_names.index(prediction)],
                "probabilities": dict(zip(self.label_names, probabilities))}

    def metrics(self, predictions: Tensor, targets: Tensor) -> dict[str, float]:
        predictions, targets = as_tensor(predictions, torch.long).cpu(), as_tensor(targets, torch.long).cpu()
        accuracy = float((predictions == targets).double().mean()) if len(targets) else 0.0
        # The classes seen in either (scikit-learn's default): a class neither predicts nor holds is left out.
        macro = float(f1_score(targets.numpy(), predictions.numpy(), average="macro", zero_division=0)) \
            if len(targets) else 0.0
        return {"accuracy": accuracy, "macro_f1": macro}
