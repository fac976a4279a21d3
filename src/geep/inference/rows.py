"""The one row builder and the one answer function, shared by offline prediction and the server.

``prepare`` tokenises texts exactly as every surface does (truncated to the model's max length) and, under a policy
that predicts exit layers, looks each row's layer up in the exit table; ``build_rows`` turns prepared rows into the
scheduler's ``Row``s; ``answers`` turns the outputs rows leave with into the model's task's answers (probabilities and
class ids, label sets or scores). Offline runs
(``geep.inference.offline``) and the server's worker (``geep.serving.worker``) both go through these three, so a
served answer equals ``geep.predict`` of the same text alone by construction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from geep.exit_table import exit_distribution
from geep.inference.spec import RunSpec, require_table
from geep.modeling.model import MultiExitClassifier
from geep.scheduling import Row
from geep.tasks import Answers, Task
from geep.tasks.token_classification import entity_spans
from geep.tokens import Encoded


@dataclass(frozen=True)
class Prepared:
    """Tokenised rows (``model.tokenize``'s output) and, for a policy that predicts exit layers, each row's
    predicted exit layer (N,), else None."""

    encoded: Encoded
    predicted: list[int] | None

    def __len__(self) -> int:
        return len(self.encoded["input_ids"])


def predicted_layers(model: MultiExitClassifier, spec: RunSpec, encoded: Encoded) -> list[int] | None:
    """Each row's predicted exit layer in E from its tokens alone (the model does not run), for a policy that
    predicts exit layers; None for the others."""
    if not spec.policy.predicts_layers:
        return None
    q = exit_distribution(require_table(model), encoded, model.pad_token_id)  # (N, L)
    return spec.policy.predict_layers(q, spec.knob, model.exit_layers).cpu().tolist()


def prepare(model: MultiExitClassifier, spec: RunSpec, texts: Sequence[str], text_pairs: Sequence[str] | None = None,
            *, encoded: Encoded | None = None) -> Prepared:
    """``texts`` (and ``text_pairs``) tokenised for ``spec``'s run, or ``encoded`` when already tokenised."""
    if encoded is None:
        encoded = model.tokenize(texts, text_pairs)
    return Prepared(encoded, predicted_layers(model, spec, encoded))


def build_rows(prepared: Prepared, order: Sequence[int], *, ids: Sequence[int] | None = None,
               keys: Sequence[int] | None = None, arrival: float = 0.0) -> list[Row]:
    """The scheduler's rows for the prepared rows ``order`` (indices into them), in that order.

    ``ids`` (by index; default: the index) name each row in the scheduler and in what leaves it; ``keys`` (by
    position in ``order``; default: the position) order rows of equal standing (``geep.scheduling``); ``arrival``:
    when they arrived, on the caller's clock (offline: 0).
    """
    input_ids, types = prepared.encoded["input_ids"], prepared.encoded.get("token_type_ids")
    predicted = prepared.predicted
    return [Row(i if ids is None else ids[i], input_ids[i], None if types is None else types[i], arrival=arrival,
                predicted=None if predicted is None else int(predicted[i]),
                key=position if keys is None else keys[position])
            for position, i in enumerate(order)]


def answers(task: Task, logits: Tensor) -> Answers:
    """What rows that leave with ``logits`` (F, K + S) answer under the model's ``task`` (``model.task``), from the
    task's K columns alone: probabilities (F, C) in fp32 (softmax; per-label sigmoids; (F, 0) for regression) and
    predictions (class ids (F,); label sets (F, C) bool; scores (F,))."""
    return task.answer(logits[..., : task.num_outputs])


def sentence_answers(task: Task, windows: Any, sentences: Sequence[Sequence[str]], predictions: Tensor,
                     exit_layer: Tensor) -> list[dict[str, Any]]:
    """A token task's answers per sentence from its windows' (``geep.data.token_data.make_windows``'s ``Windows``,
    not imported: inference stays free of the data readers): each word's
    tag (its first subword's), each word's exit layer (its window's), the entity spans the tags decode to (BIO /
    BIOES, by seqeval's rules; none for tags of no scheme) and the sentence's exit layer (its deepest window's).
    ``predictions`` (R, M) tag ids per position, ``exit_layer`` (R,), both in window order."""
    tags: list[list[str]] = [[] for _ in sentences]
    layers: list[list[int]] = [[] for _ in sentences]
    for r, (s, first) in enumerate(zip(windows.sentence, windows.first)):
        row = predictions[r].tolist()
        tags[s] += [task.label_names[row[p]] for p in first]
        layers[s] += [int(exit_layer[r])] * len(first)
    return [{"tokens": list(words), "tags": tags[s], "entities": entity_spans(words, tags[s]),
             "exit_layers": layers[s], "exit_layer": max(layers[s])} for s, words in enumerate(sentences)]
