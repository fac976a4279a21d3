"""``token-classification``: one tag of C per word (named entities, part of speech, chunks).

Layout: a row is at most M tokens (the model's ``max_length``), and an exit's outputs are a fixed-width vector of
K = M * (C + 1) columns, position by position: C tag logits, then a flag that is 1 where the position is a real
token of the row (not padding, not the special token before or after it; ``geep.modeling.heads.TokenHead``). So a
token exit's outputs are still one (B, K) tensor: the executor, the scheduler, the replay backend and the server
carry them as any task's, and only this file and the token policies (``sentee``) look inside.

Targets are (N, M) tag ids with -100 where no tag is read (every position but a word's first subword:
transformers' ``run_ner.py`` alignment, done by ``geep.data.token_data``). The loss is the cross entropy over the
tagged positions (-100 ignored); distillation the KL divergence of softmaxes (Hinton et al. 2015) per flagged
position, averaged over them; a row's answer is each position's argmax (-1 at unflagged positions). Metrics: entity
F1 as seqeval computes it (CoNLL's conlleval rules, the field's standard; Ramshaw & Marcus's BIO, and BIOES) over the
tagged positions of each row, and token accuracy. The primary metric is entity F1 when the tags are a BIO / BIOES
scheme, else (part of speech) token accuracy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from seqeval.metrics import f1_score as entity_f1
from seqeval.metrics.sequence_labeling import get_entities
from torch import Tensor

from geep.errors import GeepError
from geep.tasks.base import Answers, Task, as_tensor, detached, named

IGNORE = -100  # targets at positions no tag is read from (PyTorch's and transformers' ignore index)


def is_entity_scheme(names: Sequence[str]) -> bool:
    """Whether tag names are a BIO / BIOES entity scheme ("O", "B-PER", "I-PER", "E-..", "S-..")."""
    return any(n != "O" for n in names) and all(
        n == "O" or (len(n) > 2 and n[0] in "BIES" and n[1] in "-_") for n in names)


@dataclass(frozen=True)
class TokenClassification(Task):
    positions: int = 0  # M: tokens per row (the model's max_length)

    name = "token-classification"
    prediction_fields = ("tokens", "tags", "entities", "exit_layers")
    verify_rule = "sentee"

    # ------------------------------------------------------------------------------------------------ structure
    @property
    def primary(self) -> str:  # type: ignore[override]
        return "entity_f1" if is_entity_scheme(self.label_names) else "token_accuracy"

    @property
    def metric_names(self) -> tuple[str, ...]:  # type: ignore[override]
        return ("entity_f1", "token_accuracy") if self.primary == "entity_f1" else ("token_accuracy", "entity_f1")

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    @property
    def num_outputs(self) -> int:
        return self.positions * (self.num_classes + 1)

    @classmethod
    def check_label_names(cls, names: Sequence[str]) -> None:
        if len(names) < 2:
            raise GeepError(f"a token classifier needs at least 2 tags, got {list(names)}")

    def per_position(self, outputs: Tensor) -> tuple[Tensor, Tensor]:
        """Outputs (..., K) as tag logits (..., M, C) and the real-token flag (..., M) bool."""
        shaped = outputs[..., : self.num_outputs].reshape(*outputs.shape[:-1], self.positions, self.num_classes + 1)
        return shaped[..., :-1], shaped[..., -1] > 0.5

    # --------------------------------------------------------------------------------------------------- labels
    def read_labels(self, values: Sequence[Any], source: str) -> list[list[str]]:
        for row, value in enumerate(values, 1):
            if not isinstance(value, (list, tuple)):
                raise GeepError(f"{source}: row {row} holds one label ({str(value)[:40]}), not a tag per word; "
                                "sentence labels are classification data")
        return [[str(v) for v in value] for value in values]

    @classmethod
    def vocabulary(cls, labels: Sequence) -> list[str]:
        return sorted({tag for row in labels for tag in row if tag is not None})

    def targets(self, labels: Sequence | Tensor, source: str = "labels") -> Tensor:
        """Each row's tag per position (a name, or an id; None or -100 where none is read; ``geep.data.token_data``)
        as ids (N, M), -100 at untagged positions and past the row's end."""
        if isinstance(labels, Tensor):
            return labels.long()
        index = {name: i for i, name in enumerate(self.label_names)}
        unknown = sorted({t for row in labels for t in row if isinstance(t, str) and t not in index})
        if unknown:
            raise GeepError(f"{source}: tag(s) never seen in training: {named(unknown)}; known tags: "
                            f"{named(self.label_names)}")
        out = torch.full((len(labels), self.positions), IGNORE, dtype=torch.long)
        for r, row in enumerate(labels):
            if len(row) > self.positions:
                raise GeepError(f"{source}: row {r + 1} has {len(row)} positions, more than {self.positions}")
            for p, tag in enumerate(row):
                if isinstance(tag, str):
                    out[r, p] = index[tag]
                elif tag is not None and tag != IGNORE:
                    if not 0 <= int(tag) < self.num_classes:
                        raise GeepError(f"{source}: row {r + 1} has tag id {tag}, outside 0..{self.num_classes - 1}")
                    out[r, p] = int(tag)
        return out

    def strata(self, labels: Sequence) -> list:
        """Whether a row holds a tag other than "O" (for entity data: whether it names an entity)."""
        return [any(t not in (None, "O") for t in row) for row in labels]

    # --------------------------------------------------------------------------------------------------- losses
    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        logits, _ = self.per_position(outputs)  # (B, M, C)
        return F.cross_entropy(logits.reshape(-1, self.num_classes), targets.reshape(-1), ignore_index=IGNORE)

    def per_exit_loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """outputs (S, B, K), targets (B, M) -> (S,): each exit's mean cross entropy over the tagged positions."""
        logits, _ = self.per_position(outputs)  # (S, B, M, C)
        S = logits.shape[0]
        per = F.cross_entropy(logits.reshape(-1, self.num_classes), targets.repeat(S, 1).reshape(-1),
                              ignore_index=IGNORE, reduction="none").view(S, -1)  # (S, B*M), 0 where ignored
        tagged = (targets != IGNORE).sum().clamp(min=1)
        return per.sum(1) / tagged

    def distillation(self, student: Tensor, teacher: Tensor, temperature: float = 1.0) -> Tensor:
        """sum over the S students of KL(p_T || p_k) per real-token position, averaged over those positions; at a
        temperature t both softmaxes are of logits / t and the sum is scaled by t^2 (Hinton et al. 2015)."""
        teacher = detached(teacher, temperature)
        t_logits, flag = self.per_position(teacher)  # (B, M, C), (B, M)
        s_logits, _ = self.per_position(student)  # (S, B, M, C)
        p_teacher = F.softmax(t_logits[flag] / temperature, dim=-1)  # (P, C)
        total = student.new_zeros(())
        for logits in s_logits:
            total = total + F.kl_div(F.log_softmax(logits[flag] / temperature, dim=-1), p_teacher,
                                     reduction="batchmean")
        return total if temperature == 1.0 else total * temperature**2

    def exit_is_right(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """The share of each row's tagged positions the exit gets right: (S, B)."""
        logits, _ = self.per_position(outputs)  # (S, B, M, C)
        tagged = targets != IGNORE  # (B, M)
        right = (logits.argmax(-1) == targets) & tagged
        return right.sum(-1).to(outputs.dtype) / tagged.sum(-1).clamp(min=1).to(outputs.dtype)

    # -------------------------------------------------------------------------------------------------- answers
    def answer(self, outputs: Tensor) -> Answers:
        """probabilities (F, M, C) fp32; predictions (F, M) tag ids, -1 at positions that are no real token."""
        logits, flag = self.per_position(outputs.float())
        probabilities = logits.softmax(-1)
        predictions = torch.where(flag, probabilities.argmax(-1), torch.full_like(flag, -1, dtype=torch.long))
        return Answers(probabilities, predictions)

    def written(self, predictions: Tensor, probabilities: Tensor) -> list[list[str | None]]:
        """Each row's tag name per position (None where no real token is)."""
        return [[self.label_names[i] if i >= 0 else None for i in row] for row in predictions.tolist()]

    def row(self, prediction: Any, probabilities: Sequence[float]) -> dict[str, Any]:
        return {"tags": prediction}

    # -------------------------------------------------------------------------------------------------- metrics
    def metrics(self, predictions: Tensor, targets: Tensor) -> dict[str, float]:
        """Entity F1 (seqeval, micro over entity types) and token accuracy over each row's tagged positions."""
        predictions, targets = as_tensor(predictions, torch.long).cpu(), as_tensor(targets, torch.long).cpu()
        tagged = targets != IGNORE
        n = int(tagged.sum())
        accuracy = float(((predictions == targets) & tagged).sum()) / n if n else 0.0
        f1 = 0.0
        if n and is_entity_scheme(self.label_names):
            true, pred = [], []
            for p, t, m in zip(predictions.tolist(), targets.tolist(), tagged.tolist()):
                true.append([self.label_names[x] for x, keep in zip(t, m) if keep])
                pred.append([self.label_names[x] if x >= 0 else "O" for x, keep in zip(p, m) if keep])
            f1 = float(entity_f1(true, pred, zero_division=0))
        return {"entity_f1": f1, "token_accuracy": accuracy}


def entity_spans(words: Sequence[str], tags: Sequence[str]) -> list[dict[str, Any]]:
    """The entities of a BIO / BIOES tag sequence as ``{"type", "start", "end", "text"}`` (word indices, end
    exclusive), decoded by seqeval's own ``get_entities`` (the spans its F1 counts); [] for tags of no scheme."""
    if not tags or not all(t == "O" or (len(t) > 2 and t[1] in "-_" and t[0] in "BIESLU") for t in tags):
        return []
    return [{"type": kind, "start": start, "end": end + 1, "text": " ".join(words[start:end + 1])}
            for kind, start, end in get_entities(list(tags))]
