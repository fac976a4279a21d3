"""Building a model's token exit table from held-out rows, and choosing its build threshold S on dev.

The table is built from rows that took no gradient step (by default a held-out slice of the training data): each
row's exit layer is what the ``fastbert`` rule at the build threshold S gives it, measured by running the model
(``geep.inference``). A new row's exit layer is then predicted from its tokens alone (``geep.exit_table``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from geep.errors import GeepError
from geep.evaluation.sweep import choose_knob, sweep
from geep.exit_table import ExitTable
from geep.inference.inputs import as_texts, label_ids
from geep.inference.runs import run_policy
from geep.modeling.model import MultiExitClassifier
from geep.policies import get_policy
from geep.tokens import pad_batch

logger = logging.getLogger(__name__)

TABLE_FILE = "exit_table.safetensors"
DEFAULT_BUILD_THRESHOLD = 0.2  # used only when there is no dev data to choose S on (a classifier's fastbert S)


def default_build_threshold(model: MultiExitClassifier) -> float:
    """S without dev data: :data:`DEFAULT_BUILD_THRESHOLD` for a classifier, else the default knob of the task's
    exit rule (``margin``: 0.4; ``pabee``: |E| // 2)."""
    if model.config.task == "classification":
        return DEFAULT_BUILD_THRESHOLD
    rule = get_policy(model.task.verify_rule)
    return float(rule.knob_spec(model.config.num_labels, len(model.exit_layers)).default)
AUTO_MAX_ACCURACY_DROP = 0.0  # points: the automatic S costs fastbert no dev accuracy (see auto_build_threshold)
NOISY_DEV_ROWS = 100  # fewer dev rows than this: one row is a point or more of accuracy, and S is chosen by noise


def build_table(model: MultiExitClassifier, texts: Sequence[str], text_pairs: Sequence[str] | None = None, *,
                build_threshold: float | None = None, ngram: int = 1, min_count: int = 2,
                smoothing: float = 1.0, combine: str = "mean", batch_size: int = 32, source: str = ""
                ) -> ExitTable:
    """Builds the model's exit table from rows that took no gradient step and records it in the config
    (``model.exit_table``, ``model.config.exit_table``); the caller saves it (``model.save_exit_table``).

    Each row's exit layer is the one the task's own exit rule (``Task.verify_rule``: ``fastbert`` for a classifier,
    ``margin`` for multi-label, ``pabee``'s score patience for regression) at ``build_threshold`` gives it: the rule
    geep-verify continues rows under.
    """
    texts = as_texts(texts)
    text_pairs = None if text_pairs is None else as_texts(text_pairs, "text_pairs")
    if not texts:
        raise GeepError("an exit table needs at least one row")
    if build_threshold is None:
        build_threshold = default_build_threshold(model)
    encoded = model.tokenize(texts, text_pairs)
    exits = run_policy(model, encoded, model.task.verify_rule, build_threshold, batch_size=batch_size).exit_layer
    batch = pad_batch(encoded, range(len(texts)), model.pad_token_id, model.device)
    ids = batch["input_ids"]
    table = ExitTable.build(ids, batch["attention_mask"], exits.to(ids.device), num_layers=model.num_layers,
                            vocab_size=model.backbone.config.vocab_size,
                            special_ids=model.tokenizer.all_special_ids, ngram=ngram, min_count=min_count,
                            smoothing=smoothing, combine=combine)
    model.exit_table = table
    summary = table.summary()
    model.config.exit_table = {
        "file": TABLE_FILE, "build_threshold": build_threshold, "rows": len(texts), "source": source,
        **table.params(), "exit_histogram": {str(k): v for k, v in summary["exit_histogram"].items()},
        **{k: summary[k] for k in ("unigram_keys", "bigram_keys", "usable_bigram_keys") if k in summary}}
    stale = model.config.drop_knobs(("geep", "geep-verify"))
    if stale:
        logger.info("the calibrated knobs of %s were for the previous table; run `geep calibrate` again",
                    " and ".join(stale))
    return table


def auto_build_threshold(model: MultiExitClassifier, texts: Sequence[str], labels: Sequence[str],
                         text_pairs: Sequence[str] | None = None, *, batch_size: int = 32,
                         max_accuracy_drop: float = AUTO_MAX_ACCURACY_DROP) -> float:
    """The build threshold S chosen on labelled dev rows: the knob of the task's exit rule (``fastbert`` for a
    classifier) with the highest FLOPs speed-up whose dev score (the task's primary metric) is within
    ``max_accuracy_drop`` points of the full model's.

    A fixed S does not fit every data set: at S = 0.2, 90% of the tweets table rows measured exit L (a 3-class
    task whose exits are rarely that certain), while on bbc most rows exit at layer 1. Choosing S where the
    dynamic rule keeps its accuracy makes the table record exits the model can afford. The default allows no
    loss: an S allowed 1 point on bbc's 213 dev rows sent 167 of 169 table rows to layer 1, so the table
    predicted layer 1 for every row and lost 2.8 points on test; S is also geep-verify's threshold.

    S is chosen by the point estimate, not by ``geep calibrate``'s confidence bound (:mod:`geep.evaluation.bounds`):
    S is a build parameter of the table, not a promise stored for predict -- the knobs calibrated on top of the
    table (geep's tau, geep-verify's (tau, t)) carry the bound. At a zero budget a bound passes only knobs that
    change no row's correctness or are confidently more accurate than full, so S would hang on the first row a
    knob loses (on bbc's 213 dev rows, BENCHMARKS.md: "Calibration you can trust"); the point rule at 0 points is
    already conservative, and below ``NOISY_DEV_ROWS`` rows it warns as before.
    """
    texts = as_texts(texts)
    if len(texts) < NOISY_DEV_ROWS:
        logger.warning("the build threshold S is chosen on only %d dev rows: below %d the choice is noise; pass "
                       "more dev rows or --build-threshold", len(texts), NOISY_DEV_ROWS)
    encoded = model.tokenize(texts, None if text_pairs is None else as_texts(text_pairs, "text_pairs"))
    rule = model.task.verify_rule
    result = sweep(model, encoded, label_ids(model, list(labels)), policies=[rule], batch_size=batch_size,
                   grid_points=41)
    point = choose_knob(result.points[rule], result.full.score, max_accuracy_drop=max_accuracy_drop,
                        confidence=None)
    logger.info("build threshold S = %.3g: %s's dev %s %.2f (full %.2f; x 100), mean exit layer %.2f", point.knob,
                rule, point.metric, 100 * point.score, 100 * result.full.score, point.mean_exit_layer)
    return float(point.knob)
