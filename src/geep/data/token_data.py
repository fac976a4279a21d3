"""Token-classification data: sentences of words with one tag per word, read, checked, windowed and aligned.

Readers: a ``datasets`` table (JSONL, parquet, a ``save_to_disk`` directory, a packaged set) with a column holding
each sentence's words (``tokens``) and one holding its tags (``tags``; names settable; tags as strings, or as ids
that the column's ``ClassLabel`` feature names, as Hugging Face's token-classification sets store them), and CoNLL
column files (``.conll``: one word per line, its columns separated by whitespace, the tag in the last column, a
blank line between sentences; ``-DOCSTART-`` lines are skipped). Everything the user can get wrong is a one-line
GeepError naming the row (or line).

Alignment follows transformers' ``examples/pytorch/token-classification/run_ner.py``: a sentence is tokenised with
``is_split_into_words=True``; the first subword of each word carries the word's tag, every other position (further
subwords, special tokens, padding) the ignore index -100 (here: ``None``, mapped to -100 by the task); a word's
prediction is its first subword's. A sentence whose subwords do not fit in ``max_length`` (less the tokenizer's
special tokens) is cut into consecutive windows of whole words, each a row of its own, so that every word gets a tag
(a single word longer than a window keeps its first subwords: it still has its first one).

A row is written as its words joined by single spaces (words holding whitespace are refused), so the model's own
``tokenize`` (which splits a token task's text on spaces and tokenises the words the same way) gives exactly the ids
aligned here, and every text-based surface (training batches, rows, the server) carries token rows unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets

from geep.errors import GeepError
from geep.tasks.token_classification import entity_spans  # noqa: F401 (re-exported)
from geep.tokens import check_tokenizer, sentence_words, tokenize_words  # noqa: F401 (re-exported)

CONLL_EXTENSIONS = (".conll",)
WORD_SEPARATOR = " "


@dataclass
class TokenData:
    """Sentences (lists of words) and, where the data has them, each word's tag."""

    sentences: list[list[str]]
    tags: list[list[str]] | None
    source: str

    def __len__(self) -> int:
        return len(self.sentences)


@dataclass
class Windows:
    """The rows a set of sentences becomes: ``texts`` (words joined by spaces), ``sentence`` (R,) the sentence each
    row is a window of, ``words`` (R,) (start, end) of its words in the sentence, ``first`` each row's position of
    each of its words' first subword, and ``position_tags`` (with tags) each row's tag per position (None where
    no tag is read)."""

    texts: list[str]
    sentence: list[int]
    words: list[tuple[int, int]]
    first: list[list[int]]
    position_tags: list[list[str | None]] | None

    def __len__(self) -> int:
        return len(self.texts)


# --- reading ------------------------------------------------------------------------------------------------------


def read_conll(path: Path) -> datasets.Dataset:
    """A CoNLL column file as a table of ``tokens`` and ``tags`` (the first and last column); GeepError on a line
    whose number of columns differs from the file's first word line, a line of one column, or no sentence."""
    try:
        lines = path.read_text(encoding="utf-8-sig").split("\n")
    except UnicodeDecodeError:
        raise GeepError(f"{path}: cannot decode its bytes as UTF-8") from None
    sentences, tags, words, labels = [], [], [], []
    width = None
    for lineno, line in enumerate(lines, 1):
        parts = line.split()
        if not parts:
            if words:
                sentences.append(words)
                tags.append(labels)
                words, labels = [], []
            continue
        if parts[0] == "-DOCSTART-":
            continue
        if len(parts) < 2:
            raise GeepError(f"{path}: line {lineno} has one column ({line.strip()[:40]!r}); a CoNLL line is a word "
                            "and its columns, the tag last")
        width = len(parts) if width is None else width
        if len(parts) != width:
            raise GeepError(f"{path}: line {lineno} has {len(parts)} columns, but the file's lines have {width} "
                            "(a ragged line)")
        words.append(parts[0])
        labels.append(parts[-1])
    if words:
        sentences.append(words)
        tags.append(labels)
    if not sentences:
        raise GeepError(f"{path} has no sentences")
    return datasets.Dataset.from_dict({"tokens": sentences, "tags": tags})


def is_token_data(ds: datasets.Dataset, tokens_column: str, tags_column: str) -> bool:
    """Whether ``ds`` holds token-classification data: a column of word lists beside a column of tag lists."""
    def listed(name: str) -> bool:
        feature = ds.features.get(name)
        return isinstance(feature, (datasets.Sequence, datasets.List, list))
    return listed(tokens_column) and listed(tags_column)


def tag_names_of(ds: datasets.Dataset, tags_column: str) -> list[str] | None:
    """The names a ``ClassLabel`` tags feature gives its ids, or None."""
    feature = ds.features.get(tags_column)
    inner = getattr(feature, "feature", None)
    if isinstance(feature, list) and feature:
        inner = feature[0]
    return list(inner.names) if isinstance(inner, datasets.ClassLabel) else None


def get_token_columns(ds: datasets.Dataset, tokens_column: str, tags_column: str | None, *, source: str,
                      require_tags: bool) -> TokenData:
    """The words (and tags) of ``ds`` as plain lists, checked: every row a non-empty list of words without
    whitespace, and (with tags) as many tags as words."""
    if tokens_column not in ds.column_names:
        raise GeepError(f"{source} has no column '{tokens_column}'; its columns are: {', '.join(ds.column_names)}")
    sentences = []
    for row, words in enumerate(ds.data.column(tokens_column).to_pylist(), 1):
        if not isinstance(words, list):
            raise GeepError(f"{source}: row {row} of column '{tokens_column}' is not a list of words (is this "
                            "sentence data? a sentence model takes texts, not --tokens-column)")
        if not words:
            raise GeepError(f"{source}: row {row} is an empty sentence (no words)")
        for word in words:
            if not isinstance(word, str) or not word or word != word.strip() or any(c.isspace() for c in word):
                raise GeepError(f"{source}: row {row} holds a word that is empty, not a string or holds whitespace: "
                                f"{word!r}")
        sentences.append(words)
    tags = None
    if tags_column is not None and tags_column in ds.column_names:
        names = tag_names_of(ds, tags_column)
        tags = []
        for row, (words, values) in enumerate(zip(sentences, ds.data.column(tags_column).to_pylist()), 1):
            if not isinstance(values, list):
                raise GeepError(f"{source}: row {row} of column '{tags_column}' is not a list of tags")
            if len(values) != len(words):
                raise GeepError(f"{source}: row {row} has {len(words)} words but {len(values)} tags")
            tags.append([_tag(v, names, row, source) for v in values])
    elif require_tags:
        raise GeepError(f"{source} has no column '{tags_column}'; its columns are: {', '.join(ds.column_names)}")
    return TokenData(sentences, tags, source)


def _tag(value: Any, names: list[str] | None, row: int, source: str) -> str:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise GeepError(f"{source}: row {row} has a missing tag")
    if names is not None and isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value < len(names):
            raise GeepError(f"{source}: row {row} has tag id {value}, outside its {len(names)} tag names")
        return names[value]
    return str(value).strip()


# --- windows and alignment ----------------------------------------------------------------------------------------


def make_windows(tokenizer: Any, data: TokenData, max_length: int) -> Windows:
    """``data``'s sentences as rows of at most ``max_length`` tokens (see the module docstring)."""
    check_tokenizer(tokenizer)
    budget = max_length - 2  # one special token each side (check_tokenizer)
    if budget < 1:
        raise GeepError(f"max length {max_length} leaves no room for a word beside the special tokens")
    counts = tokenizer([list(s) for s in data.sentences], is_split_into_words=True, add_special_tokens=False)
    spans, owners = [], []
    for s, words in enumerate(data.sentences):
        per_word = [0] * len(words)
        for w in counts.word_ids(s):
            if w is not None:
                per_word[w] += 1
        start, used = 0, 0
        for w, n in enumerate(per_word):
            n = max(n, 1)  # a word the tokenizer drops (a lone control character) still takes its [UNK] place
            if w > start and used + n > budget:
                spans.append((start, w))
                owners.append(s)
                start, used = w, 0
            used += n
        spans.append((start, len(words)))
        owners.append(s)
    rows = [data.sentences[s][a:b] for s, (a, b) in zip(owners, spans)]
    encoded = tokenize_words(tokenizer, rows, max_length)
    first, position_tags = [], [] if data.tags is not None else None
    for r, ((a, b), s) in enumerate(zip(spans, owners)):
        word_ids = encoded.word_ids(r)
        starts = [-1] * (b - a)
        for position, w in enumerate(word_ids):
            if w is not None and starts[w] < 0:
                starts[w] = position
        if any(p < 0 for p in starts):
            missing = data.sentences[s][a + starts.index(-1)]
            raise GeepError(f"{data.source}: sentence {s + 1}'s word {missing!r} gives no token with this "
                            "tokenizer")
        first.append(starts)
        if position_tags is not None:
            tags = [None] * len(word_ids)
            for w, position in enumerate(starts):
                tags[position] = data.tags[s][a + w]
            position_tags.append(tags)
    return Windows([WORD_SEPARATOR.join(words) for words in rows], owners, spans, first, position_tags)

