"""The token-classification task: layout, loss with -100 ignored, distillation over real tokens, answers, and entity
F1 / token accuracy checked against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from geep.errors import GeepError
from geep.tasks import get_task

TAGS = ("B-PER", "I-PER", "O")


def _task(positions: int = 4, tags=TAGS):
    return get_task("token-classification")(label_names=tags, positions=positions)


def _outputs(logits: torch.Tensor, flag: torch.Tensor) -> torch.Tensor:
    """(B, M, C) logits and (B, M) flags as the flat layout (B, M (C + 1))."""
    return torch.cat([logits, flag[..., None].float()], -1).reshape(logits.shape[0], -1)


def test_layout_and_primary_metric() -> None:
    task = _task()
    assert task.num_outputs == 4 * 4
    assert task.primary == "entity_f1"
    assert _task(tags=("NOUN", "VERB")).primary == "token_accuracy"


def test_loss_ignores_untagged_positions() -> None:
    task = _task()
    logits = torch.randn(2, 4, 3, generator=torch.Generator().manual_seed(0))
    targets = torch.tensor([[-100, 0, 1, -100], [-100, 2, -100, -100]])
    out = _outputs(logits, torch.ones(2, 4))
    by_hand = sum(-F.log_softmax(logits[b, p], -1)[targets[b, p]] for b, p in ((0, 1), (0, 2), (1, 1))) / 3
    assert torch.allclose(task.loss(out, targets), by_hand)
    per_exit = task.per_exit_loss(torch.stack([out, out * 0]), targets)
    assert torch.allclose(per_exit, torch.stack([by_hand, torch.tensor(math.log(3.0))]))


def test_distillation_reads_only_flagged_positions() -> None:
    task = _task(positions=2)
    g = torch.Generator().manual_seed(1)
    s_logits, t_logits = torch.randn(1, 2, 3, generator=g), torch.randn(1, 2, 3, generator=g)
    flag = torch.tensor([[1.0, 0.0]])
    student, teacher = _outputs(s_logits, flag)[None], _outputs(t_logits, flag)
    p = F.softmax(t_logits[0, 0], -1)
    by_hand = (p * (p.log() - F.log_softmax(s_logits[0, 0], -1))).sum()
    assert torch.allclose(task.distillation(student, teacher), by_hand, atol=1e-6)


def test_targets_and_unknown_tag() -> None:
    task = _task()
    assert task.targets([[None, "B-PER", "O"]]).tolist() == [[-100, 0, 2, -100]]
    with pytest.raises(GeepError, match="never seen in training: 'B-LOC'"):
        task.targets([[None, "B-LOC"]])


def test_answer_and_metrics_by_hand() -> None:
    task = _task(positions=5)
    # row 0: words at positions 1..3 -> predicted B-PER I-PER O; row 1: word at 1 -> predicted B-PER
    pred = torch.tensor([[-1, 0, 1, 2, -1], [-1, 0, -1, -1, -1]])
    logits = F.one_hot(pred.clamp(min=0), 3).float() * 5
    answered = task.answer(_outputs(logits, (pred >= 0).float()))
    assert answered.predictions.tolist() == pred.tolist()
    # truth: row 0 B-PER I-PER O (entity right), row 1 O (a false positive); 1 true entity, 2 predicted, 1 right
    targets = torch.tensor([[-100, 0, 1, 2, -100], [-100, 2, -100, -100, -100]])
    metrics = task.metrics(answered.predictions, targets)
    precision, recall = 1 / 2, 1 / 1
    assert metrics["entity_f1"] == pytest.approx(2 * precision * recall / (precision + recall))
    assert metrics["token_accuracy"] == pytest.approx(3 / 4)


@pytest.mark.parametrize("objective", ["geep", "fastbert", "deebert", "pabee"])
def test_every_sentence_objective_trains_a_token_model(tmp_path, objective):
    """The task-generic losses apply per token: each objective's stages run on token targets and move the teacher's
    per-token loss on the training rows (compared before and after, on the same rows)."""
    from transformers import BertModel

    from geep.data.token_data import TokenData, make_windows
    from geep.modeling.config import GeepConfig
    from geep.modeling.model import MultiExitClassifier
    from geep.tokens import pad_batch
    from geep.training.loop import EncodedData, TrainingArguments, train
    from tests.helpers import tiny_bert_config, tiny_tokenizer

    torch.manual_seed(0)
    config = GeepConfig(num_layers=3, label_names=list(TAGS), task="token-classification", max_length=16,
                        head="linear", objective=objective)
    model = MultiExitClassifier(BertModel(tiny_bert_config(3)), config, tiny_tokenizer(tmp_path))
    words = [["good", "movie", "the"], ["the", "a", "good"], ["great", "film"]] * 6
    tags = [["B-PER" if w in ("good", "great") else "I-PER" if w in ("movie", "film") else "O" for w in s]
            for s in words]
    windows = make_windows(model.tokenizer, TokenData(words, tags, "t"), 16)
    targets = model.task.targets(windows.position_tags)
    data = EncodedData.from_texts(model, windows.texts, None, targets)

    def teacher_loss() -> float:
        model.eval()
        batch = pad_batch(data.encoded, range(len(data)), model.pad_token_id)
        with torch.no_grad():
            out = model(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids")).exit_logits[-1]
        return float(model.task.loss(out, targets))

    before = teacher_loss()
    result = train(model, data, data, TrainingArguments(epochs=3, distil_epochs=1, batch_size=6, head_lr=1e-2,
                                                        show_progress_bar=False, device="cpu"))
    assert set(result.dev_accuracy) == {"1", "2", "3"}
    assert teacher_loss() < before
