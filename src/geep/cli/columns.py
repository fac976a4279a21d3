"""Which columns a command reads with a saved model: the flags, else the columns the model was trained on.

A text pair column only makes sense for a model trained on pairs: ``--text-pair-column`` on a model trained on
single texts would feed it inputs it never saw (``[CLS] a [SEP] b [SEP]``), so it is an error, not a silent
change of task.
"""

from __future__ import annotations

from geep.errors import GeepError
from geep.modeling.config import GeepConfig


def pair_column(given: str | None, config: GeepConfig, model: str = "the model") -> str | None:
    """The text pair column to read: ``given`` or the model's; GeepError when ``given`` names one for a model
    trained on single texts."""
    if given is not None and config.text_pair_column is None:
        raise GeepError(f"--text-pair-column {given}: {model} was trained on single texts (no text pair column); "
                        "drop the flag")
    return given or config.text_pair_column


def token_rows(model, ds, tokens_column: str, tags_column: str, source: str, *, max_samples: int | None = None,
               seed: int = 0) -> tuple[list[str], "object"]:
    """A token classifier's evaluation rows of ``ds``: its sentences (a seeded subset of ``max_samples`` of them,
    kept in proportion of whether they hold a non-O tag) cut into windows of the model's max length
    (``geep.data.token_data``), and their targets (R, M): what calibrate and bench score knobs on. Sentence data
    (a ``text`` column and no words) is a one-line error."""
    from geep.data import TokenData, get_token_columns, make_windows, stratified_subset

    if tokens_column not in ds.column_names and "text" in ds.column_names:
        raise GeepError(f"{source} holds sentence data (a 'text' column), but the model is a token classifier: it "
                        "reads a column of words (--text-column)")
    data = get_token_columns(ds, tokens_column, tags_column, source=source, require_tags=True)
    if max_samples is not None and max_samples < len(data):
        keep = stratified_subset(model.task.strata(data.tags), max_samples, seed)
        data = TokenData([data.sentences[i] for i in keep], [data.tags[i] for i in keep], source)
    windows = make_windows(model.tokenizer, data, model.max_length)
    return windows.texts, model.task.targets(windows.position_tags, source)


def refuse_token_data(ds, text_column: str, source: str, model: str) -> None:
    """GeepError when a sentence model is given token-classification data (words and tags, no text column)."""
    from geep.data import is_token_data

    if text_column not in ds.column_names and is_token_data(ds, "tokens", "tags"):
        raise GeepError(f"{source} holds token-classification data (words and tags), but {model} is a model of "
                        "texts")
