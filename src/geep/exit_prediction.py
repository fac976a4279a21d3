"""Connects a model to its token exit table: build it from held-out rows, predict rows' exit layers.

The table is built from rows that took no gradient step (by default a held-out slice of the training data):
each row's exit layer is what the ``fastbert`` rule at the build threshold S gives on it. A new row's exit
layer is then predicted from its tokens alone, before the model runs (see ``geep.exit_table``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Sequence

import torch
from torch import Tensor

from geep.engine import pad_batch, pad_id_of
from geep.exit_table import ExitTable, layers_from_distribution

if TYPE_CHECKING:
    from geep.model import MultiExitClassifier

logger = logging.getLogger(__name__)

TABLE_FILE = "exit_table.safetensors"
DEFAULT_BUILD_THRESHOLD = 0.2  # used only when there is no dev data to choose S on
AUTO_MAX_ACCURACY_DROP = 0.0  # points: the automatic S costs fastbert no dev accuracy (see auto_build_threshold)


def padded_ids(model: "MultiExitClassifier", encoded: dict[str, list[list[int]]], rows: Sequence[int]
               ) -> tuple[Tensor, Tensor]:
    """input_ids, attention_mask (B, T) of ``rows``, on the model's device."""
    batch = pad_batch(encoded, rows, pad_id_of(model), model.device)
    return batch["input_ids"], batch["attention_mask"]


def build_table(model: "MultiExitClassifier", texts: Sequence[str], text_pairs: Sequence[str] | None = None, *,
                build_threshold: float = DEFAULT_BUILD_THRESHOLD, ngram: int = 1, min_count: int = 2,
                smoothing: float = 1.0, combine: str = "mean", batch_size: int = 32, source: str = ""
                ) -> ExitTable:
    """Builds the model's exit table from rows that took no gradient step, and records it in the config.

    Each row's exit layer is the one the ``fastbert`` rule at ``build_threshold`` gives it.
    """
    from geep.engine import predict

    if not len(texts):
        raise ValueError("an exit table needs at least one row")
    exits = predict(model, list(texts), None if text_pairs is None else list(text_pairs), policy="fastbert",
                    knob=build_threshold, batch_size=batch_size).exit_layers
    encoded = model.tokenize(texts, text_pairs)
    ids, mask = padded_ids(model, encoded, range(len(texts)))
    table = ExitTable.build(ids, mask, exits.to(ids.device), num_layers=model.num_layers,
                            vocab_size=model.backbone.config.vocab_size,
                            special_ids=model.tokenizer.all_special_ids, ngram=ngram, min_count=min_count,
                            smoothing=smoothing, combine=combine)
    model.exit_table = table
    summary = table.summary()
    model.config.exit_table = {
        "file": TABLE_FILE, "build_threshold": build_threshold, "rows": len(texts), "source": source,
        **table.params(), "exit_histogram": {str(k): v for k, v in summary["exit_histogram"].items()},
        **{k: summary[k] for k in ("unigram_keys", "bigram_keys", "usable_bigram_keys") if k in summary}}
    stale = [p for p in ("geep", "geep-verify") if model.config.default_knobs.pop(p, None) is not None]
    if stale:
        logger.info("the calibrated knobs of %s were for the previous table; run `geep calibrate` again",
                    " and ".join(stale))
    return table


def auto_build_threshold(model: "MultiExitClassifier", texts: Sequence[str], labels: Sequence[str],
                         text_pairs: Sequence[str] | None = None, *, batch_size: int = 32,
                         max_accuracy_drop: float = AUTO_MAX_ACCURACY_DROP) -> float:
    """The build threshold S chosen on labelled dev rows: the ``fastbert`` knob with the highest FLOPs speed-up
    whose dev accuracy is within ``max_accuracy_drop`` points of the full model's.

    A fixed S does not fit every data set: at S = 0.2, 90% of the tweets table rows measured exit L (a 3-class
    task whose exits are rarely that certain), while on bbc most rows exit at layer 1. Choosing S where the
    dynamic rule keeps its accuracy makes the table record exits the model can afford. The default allows no
    loss: an S allowed 1 point on bbc's 213 dev rows sent 167 of 169 table rows to layer 1, so the table
    predicted layer 1 for every row and lost 2.8 points on test; S is also geep-verify's threshold.
    """
    from geep.calibrate import choose_knob, sweep
    from geep.engine import label_ids

    encoded = model.tokenize(list(texts), None if text_pairs is None else list(text_pairs))
    result = sweep(model, encoded, label_ids(model, list(labels)), policies=["fastbert"], batch_size=batch_size,
                   grid_points=41)
    point = choose_knob(result.points["fastbert"], result.full.accuracy, max_accuracy_drop=max_accuracy_drop)
    logger.info("build threshold S = %.3g: fastbert's dev accuracy %.2f%% (full %.2f%%), mean exit layer %.2f",
                point.knob, 100 * point.accuracy, 100 * result.full.accuracy, point.mean_exit_layer)
    return float(point.knob)


def exit_distribution(model: "MultiExitClassifier", encoded: dict[str, list[list[int]]], chunk: int = 1024
                      ) -> Tensor:
    """Every row's predicted exit distribution q (N, L) from its tokens (the model does not run)."""
    table = require_table(model)
    n = len(encoded["input_ids"])
    parts = []
    for start in range(0, n, chunk):
        ids, mask = padded_ids(model, encoded, range(start, min(n, start + chunk)))
        parts.append(table.predict_distribution(ids.to(table.device), mask.to(table.device)))
    return torch.cat(parts) if parts else torch.zeros((0, model.num_layers), dtype=torch.float64)


def predicted_layers(model: "MultiExitClassifier", q: Tensor, tau: float) -> Tensor:
    """Predicted exit layers (N,) in E at quantile ``tau`` of each row's distribution q (N, L)."""
    return layers_from_distribution(q, tau, model.exit_layers)


NO_TABLE = "this model has no exit table; build one with `geep build-table --model DIR --data DATA`"


def require_table(model: "MultiExitClassifier") -> ExitTable:
    from geep.errors import GeepError

    if model.exit_table is None or not model.config.exit_table:
        raise GeepError(NO_TABLE)
    if model.exit_table.device != model.device:
        model.exit_table = model.exit_table.to(model.device)
    return model.exit_table




def verify_threshold(model: "MultiExitClassifier") -> float:
    """S: the build threshold recorded with the table; geep-verify continues rows less certain than it."""
    require_table(model)
    return float(model.config.exit_table["build_threshold"])


def verify_exit_index(model: "MultiExitClassifier", exit_logits: Tensor, predicted_index: Tensor) -> Tensor:
    """Where geep-verify makes each row exit, replayed from every exit's logits (N, |E|, C).

    From its predicted exit (index into E, (N,)) on, a row leaves at the first exit where the fastbert rule at S
    holds, else at L: what the pooled continuation in ``geep.scheduler.run_buckets`` does.
    """
    from geep.policies import get_policy

    N, E, _ = exit_logits.shape
    rule = get_policy("fastbert")
    S = verify_threshold(model)
    leave = torch.stack([rule.decide(exit_logits[:, j], S, {})[0] for j in range(E)], dim=1)  # (N, |E|)
    leave[:, -1] = True  # the teacher always answers
    leave &= torch.arange(E)[None] >= predicted_index[:, None]  # nothing before the predicted exit runs
    return leave.float().argmax(1)  # the first True
