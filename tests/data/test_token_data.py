"""geep.data.token_data: reading words and tags (tables, CoNLL files), windows, run_ner alignment, bad input; the
packaged token sets."""

from __future__ import annotations

from pathlib import Path

import datasets
import pytest

from geep.data import load_dataset_spec, packaged
from geep.data.token_data import TokenData, entity_spans, get_token_columns, is_token_data, make_windows
from geep.errors import GeepError
from tests.helpers import tiny_tokenizer


def _conll(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "data.conll"
    path.write_text(text)
    return path


def test_conll_reads_words_and_the_last_column(tmp_path: Path) -> None:
    path = _conll(tmp_path, "-DOCSTART- -X- O O\n\nEU NNP B-ORG\nrejects VBZ O\n\nPeter NNP B-PER\n\n\n")
    ds = load_dataset_spec(str(path))
    assert ds["tokens"] == [["EU", "rejects"], ["Peter"]]
    assert ds["tags"] == [["B-ORG", "O"], ["B-PER"]]
    assert is_token_data(ds, "tokens", "tags")


@pytest.mark.parametrize(("text", "message"), [
    ("EU NNP B-ORG\nrejects O\n", "line 2 has 2 columns, but the file's lines have 3"),
    ("EU B-ORG\nrejects\n", "line 2 has one column"),
    ("\n\n", "has no sentences"),
])
def test_bad_conll_is_one_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(GeepError, match=message) as e:
        load_dataset_spec(str(_conll(tmp_path, text)))
    assert "\n" not in str(e.value)


def test_tags_as_ids_read_through_class_label_names() -> None:
    features = datasets.Features({"tokens": datasets.Sequence(datasets.Value("string")),
                                  "ner": datasets.Sequence(datasets.ClassLabel(names=["O", "B-PER", "I-PER"]))})
    ds = datasets.Dataset.from_dict({"tokens": [["Ann", "Lee", "ran"]], "ner": [[1, 2, 0]]}, features=features)
    data = get_token_columns(ds, "tokens", "ner", source="t", require_tags=True)
    assert data.tags == [["B-PER", "I-PER", "O"]]


@pytest.mark.parametrize(("rows", "message"), [
    ({"tokens": [["a", "b"]], "tags": [["O"]]}, "row 1 has 2 words but 1 tags"),
    ({"tokens": [["a"], []], "tags": [["O"], []]}, "row 2 is an empty sentence"),
    ({"tokens": [["a b"]], "tags": [["O"]]}, "holds whitespace"),
    ({"tokens": ["a text"], "tags": [["O"]]}, "not a list of words"),
])
def test_bad_token_rows_are_one_line(rows: dict, message: str) -> None:
    with pytest.raises(GeepError, match=message):
        get_token_columns(datasets.Dataset.from_dict(rows), "tokens", "tags", source="t", require_tags=True)


def test_sentence_data_is_not_token_data() -> None:
    ds = datasets.Dataset.from_dict({"text": ["a b"], "label": ["x"]})
    assert not is_token_data(ds, "tokens", "tags")
    with pytest.raises(GeepError, match="no column 'tokens'"):
        get_token_columns(ds, "tokens", "tags", source="t", require_tags=True)


def test_first_subword_carries_the_tag(tmp_path: Path) -> None:
    tokenizer = tiny_tokenizer(tmp_path)
    # "goodmovie" is not in the vocabulary: WordPiece splits it into "good" + "##..." or [UNK]; "w5" is one token
    data = TokenData([["the", "goodbad", "w5"]], [["O", "B-X", "I-X"]], "t")
    w = make_windows(tokenizer, data, 32)
    ids = tokenizer([["the", "goodbad", "w5"]], is_split_into_words=True)
    word_ids = ids.word_ids(0)
    expected_first = [word_ids.index(i) for i in range(3)]
    assert w.first == [expected_first]
    tags = w.position_tags[0]
    assert [tags[p] for p in expected_first] == ["O", "B-X", "I-X"]
    assert sum(t is not None for t in tags) == 3  # every other position (specials, later subwords) untagged
    assert w.texts == ["the goodbad w5"]


def test_long_sentences_are_windowed_not_truncated(tmp_path: Path) -> None:
    tokenizer = tiny_tokenizer(tmp_path)
    words = [f"w{i % 50}" for i in range(45)]
    tags = [("B-X" if i % 3 == 0 else "O") for i in range(45)]
    data = TokenData([["good"], words], [["O"], tags], "t")
    w = make_windows(tokenizer, data, 10)  # 8 words per window beside [CLS] and [SEP]
    assert w.sentence == [0] + [1] * 6
    assert w.words == [(0, 1), (0, 8), (8, 16), (16, 24), (24, 32), (32, 40), (40, 45)]
    # every word of the long sentence gets its own tag back, window by window
    back = [t for r in range(1, 7) for t in w.position_tags[r] if t is not None]
    assert back == tags
    assert all(len(tokenizer([t.split()], is_split_into_words=True)["input_ids"][0]) <= 10 for t in w.texts)


def test_entity_spans_bio_and_bioes() -> None:
    words = ["Ann", "Lee", "saw", "New", "York"]
    assert entity_spans(words, ["B-PER", "I-PER", "O", "B-LOC", "I-LOC"]) == [
        {"type": "PER", "start": 0, "end": 2, "text": "Ann Lee"},
        {"type": "LOC", "start": 3, "end": 5, "text": "New York"}]
    assert entity_spans(words, ["B-PER", "E-PER", "O", "B-LOC", "E-LOC"])[1]["text"] == "New York"
    assert entity_spans(words[:1], ["S-PER"]) == [{"type": "PER", "start": 0, "end": 1, "text": "Ann"}]
    assert entity_spans(words, ["NOUN"] * 5) == []  # part of speech: no spans


@pytest.mark.parametrize(("name", "sentences", "tag"), [("wnut16", 2394, "B-person"), ("twt-pos", 2541, "NOUN")])
def test_packaged_token_sets_split_disjointly(name: str, sentences: int, tag: str) -> None:
    splits = [packaged.load_packaged(name, split) for split in packaged.SPLITS]
    assert sum(len(s) for s in splits) == sentences
    for ds in splits:
        assert ds.column_names == ["tokens", "tags"]
        assert all(len(w) == len(t) and w for w, t in zip(ds["tokens"], ds["tags"]))
    keys = [{" ".join(w) + f"#{i}" for i, w in enumerate(ds["tokens"])} for ds in splits]
    assert tag in {t for row in splits[0]["tags"] for t in row}
    total = sum(len(s) for s in splits)
    for ds, fraction in zip(splits, packaged.SPLIT_FRACTIONS):
        assert abs(len(ds) / total - fraction) < 0.01
    assert list(packaged.load_packaged(name, "dev")["tokens"]) == list(splits[1]["tokens"])
    assert keys[0]  # read through the generic loader too
    assert len(load_dataset_spec(f"{name}:test")) == len(splits[2])
