"""geep.data: every supported format loads, bad input is one clear GeepError, splits are seeded and stratified."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import datasets
import pytest

from geep.data import (
    ColumnData,
    build_label_names,
    encode_labels,
    get_columns,
    load_dataset_spec,
    stratified_split,
    stratified_subset,
)
from geep.errors import GeepError

ROWS = [{"text": "good film", "label": "pos"}, {"text": "bad film", "label": "neg"}]


def _write(path: Path, fmt: str) -> Path:
    if fmt == "csv":
        path.write_text("text,label\n" + "".join(f"{r['text']},{r['label']}\n" for r in ROWS))
    elif fmt == "tsv":
        path.write_text("text\tlabel\n" + "".join(f"{r['text']}\t{r['label']}\n" for r in ROWS))
    elif fmt == "json":
        path.write_text(json.dumps(ROWS))
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    elif fmt == "parquet":
        datasets.Dataset.from_list(ROWS).to_parquet(str(path))
    elif fmt == "saved":
        datasets.Dataset.from_list(ROWS).save_to_disk(str(path))
    return path


@pytest.mark.parametrize("fmt", ["csv", "tsv", "json", "jsonl", "parquet", "saved"])
def test_each_format_loads(tmp_path: Path, fmt: str) -> None:
    path = _write(tmp_path / (f"data.{fmt}" if fmt != "saved" else "saved_dir"), fmt)
    ds = load_dataset_spec(str(path))
    cols = get_columns(ds, "text", None, "label", source=str(path), require_labels=True)
    assert cols.texts == ["good film", "bad film"]
    assert cols.labels == ["pos", "neg"]


def test_edited_file_is_read_fresh(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("text,label\nfirst,a\n")
    assert load_dataset_spec(str(path))["text"][:] == ["first"]
    path.write_text("text,label\nsecond,b\n")
    assert load_dataset_spec(str(path))["text"][:] == ["second"]


def test_csv_keeps_text_as_written(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("text,label\n007,1\nNA,2\n")
    cols = get_columns(load_dataset_spec(str(path)), "text", None, "label", source="d", require_labels=True)
    assert cols.texts == ["007", "NA"]
    assert cols.labels == ["1", "2"]


def test_missing_file_names_it_and_the_packaged_sets(tmp_path: Path) -> None:
    with pytest.raises(GeepError, match=r"no such file: .*nope\.csv.*known: bbc, lee, tweets"):
        load_dataset_spec(str(tmp_path / "nope.csv"))


def test_unknown_extension_lists_supported(tmp_path: Path) -> None:
    path = tmp_path / "data.xlsx"
    path.write_text("whatever")
    with pytest.raises(GeepError, match=r"\.xlsx.*\.csv, \.tsv, \.json, \.jsonl, \.parquet"):
        load_dataset_spec(str(path))


def test_directory_that_is_not_a_saved_dataset(tmp_path: Path) -> None:
    with pytest.raises(GeepError, match="save_to_disk"):
        load_dataset_spec(str(tmp_path))


@pytest.mark.parametrize("content", ["", "text,label\n", "text,label\n\n\r\n"])
def test_empty_csv_has_no_rows(tmp_path: Path, content: str) -> None:
    path = tmp_path / "empty.csv"
    path.write_text(content)
    with pytest.raises(GeepError, match="empty.csv has no rows"):
        load_dataset_spec(str(path))


@pytest.mark.parametrize("suffix, sep", [(".csv", ","), (".tsv", "\t")])
@pytest.mark.parametrize("first", [True, False])
def test_a_field_over_128_kb_loads_in_any_row(tmp_path: Path, suffix: str, sep: str, first: bool) -> None:
    """The csv module refuses fields over 131072 characters; a 20k-word document in the FIRST row must load too."""
    document = " ".join(["word"] * 30_000)  # 150 KB
    rows = [(document, "a"), ("short", "b")]
    if not first:
        rows.reverse()
    path = tmp_path / f"long{suffix}"
    path.write_text(f"text{sep}label\n" + "".join(f"{text}{sep}{label}\n" for text, label in rows))
    cols = get_columns(load_dataset_spec(str(path)), "text", None, "label", source="d", require_labels=True)
    assert cols.texts == [text for text, _ in rows] and cols.labels == [label for _, label in rows]


def test_empty_jsonl_has_no_rows(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("\n")
    with pytest.raises(GeepError, match="has no rows"):
        load_dataset_spec(str(path))


def test_malformed_json_is_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(GeepError, match=r"could not read .*bad\.json") as info:
        load_dataset_spec(str(path))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name, content, where", [
    ("bad.jsonl", '{"text": "a"}\n{"text": "b"}\n\n{"text": "c" "label": 1}\n{"text": "d"}\n', "line 4, column 14"),
    ("bad.jsonl", '{"text": "a"\n{"text": "b"}\n', "line 1, column 13"),
    ("bad.json", '[\n {"text": "a"},\n {"text": "b" "label": 1}\n]\n', "line 3, column 15"),
])
def test_a_json_syntax_error_names_its_line(tmp_path: Path, name: str, content: str, where: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(GeepError) as info:
        load_dataset_spec(str(path))
    assert f"{name}: not valid JSON at {where}: Expecting ',' delimiter" in str(info.value)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_undecodable_bytes_ask_for_encoding(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"latin{suffix}"
    if suffix == ".csv":
        path.write_bytes(b"text,label\ncaf\xe9,a\nthe,b\n")
    else:
        path.write_bytes(b'{"text": "caf\xe9", "label": "a"}\n')
    with pytest.raises(GeepError, match=rf"latin\{suffix}.*--encoding") as info:
        load_dataset_spec(str(path))
    assert "\n" not in str(info.value)
    ds = load_dataset_spec(str(path), encoding="latin-1")
    assert ds["text"][0] == "café"


def test_unknown_encoding(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.csv", "csv")
    with pytest.raises(GeepError, match="unknown encoding: klingon"):
        load_dataset_spec(str(path), encoding="klingon")


def test_missing_column_lists_those_present(tmp_path: Path) -> None:
    ds = load_dataset_spec(str(_write(tmp_path / "d.csv", "csv")))
    with pytest.raises(GeepError, match=r"train\.csv has no column 'sentence'.*text, label"):
        get_columns(ds, "sentence", None, "label", source="train.csv", require_labels=True)
    with pytest.raises(GeepError, match="no column 'target'"):
        get_columns(ds, "text", None, "target", source="train.csv", require_labels=True)


def test_labels_optional_when_not_required() -> None:
    ds = datasets.Dataset.from_dict({"text": ["a", "b"], "id": [7, 8]})
    cols = get_columns(ds, "text", None, "label", source="x", require_labels=False, id_column="id")
    assert cols == ColumnData(texts=["a", "b"], text_pairs=None, labels=None, ids=[7, 8])


def test_int_labels_become_strings_and_pairs_are_read() -> None:
    ds = datasets.Dataset.from_dict({"a": ["q1", "q2"], "b": ["p1", None], "y": [1, 0]})
    cols = get_columns(ds, "a", "b", "y", source="x", require_labels=True)
    assert cols.labels == ["1", "0"]
    assert cols.text_pairs == ["p1", ""]


def test_missing_label_names_the_row(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("text,label\none,a\ntwo,\nthree,b\n")
    ds = load_dataset_spec(str(path))
    with pytest.raises(GeepError, match=r"d\.csv: data row 2 has no label in column 'label'"):
        get_columns(ds, "text", None, "label", source="d.csv", require_labels=True)
    json_ds = datasets.Dataset.from_dict({"text": ["a", "b"], "label": ["x", None]})
    with pytest.raises(GeepError, match="data row 2"):
        get_columns(json_ds, "text", None, "label", source="j", require_labels=True)


def test_empty_and_whitespace_texts_are_valid(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text('text,label\n,a\n"   ",b\nreal,a\n')
    cols = get_columns(load_dataset_spec(str(path)), "text", None, "label", source="d", require_labels=True)
    assert cols.texts == ["", "", "real"]
    ds = datasets.Dataset.from_dict({"text": [None, " \t", "x"]})
    assert get_columns(ds, "text", None, None, source="j", require_labels=False).texts == ["", "", "x"]


def test_rows_without_text_are_kept_and_counted_in_one_warning(tmp_path: Path, caplog) -> None:
    path = tmp_path / "d.jsonl"
    rows = [{"id": 1, "text": "", "pair": "p"}, {"id": 2, "text": "  \t"}, {"id": 3, "text": None, "pair": ""},
            {"id": 4, "pair": "p"}, {"id": 5, "text": "real", "pair": "p"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with caplog.at_level("WARNING", logger="geep.data.loading"):
        cols = get_columns(load_dataset_spec(str(path)), "text", "pair", None, source="d.jsonl",
                           require_labels=False, id_column="id")
    assert cols.texts == ["", "", "", "", "real"] and cols.ids == [1, 2, 3, 4, 5]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == ["d.jsonl: 4 of 5 rows have no text in column 'text'; 2 of 5 rows have no text in column "
                        "'pair' (empty, whitespace-only, null or missing); they are kept, read as empty texts"]
    caplog.clear()
    with caplog.at_level("WARNING", logger="geep.data.loading"):
        get_columns(datasets.Dataset.from_dict({"text": ["a", "b"]}), "text", None, None, source="x",
                    require_labels=False)
    assert not caplog.records


def test_label_names_and_encoding() -> None:
    names = build_label_names(["b", "a", "b", "c"])
    assert names == ["a", "b", "c"]
    assert encode_labels(["c", "a"], names, source="dev") == [2, 0]


def test_unseen_label_is_named() -> None:
    with pytest.raises(GeepError, match=r"dev\.csv: .*'zebra'.*known labels: 'a', 'b'"):
        encode_labels(["a", "zebra"], ["a", "b"], source="dev.csv")
    many = [f"u{i}" for i in range(9)]
    with pytest.raises(GeepError, match=r"and 4 more") as info:
        encode_labels(many, ["a"], source="dev")
    assert "u8" not in str(info.value)


def test_packaged_name_resolves_when_no_such_file() -> None:
    ds = load_dataset_spec("bbc:dev")
    assert set(ds.column_names) == {"text", "label"}
    assert 150 < len(ds) < 300


def _labels() -> list[str]:
    return ["a"] * 50 + ["b"] * 30 + ["c"] * 20


def test_stratified_split_is_deterministic_disjoint_and_complete() -> None:
    labels = _labels()
    parts = stratified_split(labels, [0.8, 0.1, 0.1], seed=3)
    assert parts == stratified_split(labels, [0.8, 0.1, 0.1], seed=3)
    assert parts != stratified_split(labels, [0.8, 0.1, 0.1], seed=4)
    assert sorted(i for part in parts for i in part) == list(range(len(labels)))
    assert all(part == sorted(part) for part in parts)
    assert [len(p) for p in parts] == [80, 10, 10]


def test_stratified_split_is_proportional_per_class() -> None:
    labels = _labels()
    train, dev, test = stratified_split(labels, [0.8, 0.1, 0.1], seed=0)
    totals = Counter(labels)
    for part, fraction in ((train, 0.8), (dev, 0.1), (test, 0.1)):
        counts = Counter(labels[i] for i in part)
        for label, total in totals.items():
            assert abs(counts[label] - total * fraction) < 1


def test_stratified_split_fills_every_part_for_small_classes() -> None:
    labels = ["a"] * 3 + ["b"] * 3
    parts = stratified_split(labels, [0.8, 0.1, 0.1], seed=1)
    assert all({labels[i] for i in part} == {"a", "b"} for part in parts)
    parts = stratified_split(["a", "b", "c"], [0.8, 0.1, 0.1], seed=1)
    assert all(len(part) == 1 for part in parts)


def test_stratified_split_rejects_bad_fractions() -> None:
    with pytest.raises(GeepError, match="sum to 1"):
        stratified_split(_labels(), [0.5, 0.4], seed=0)


def test_stratified_subset() -> None:
    labels = _labels()
    subset = stratified_subset(labels, 10, seed=5)
    assert subset == stratified_subset(labels, 10, seed=5)
    assert len(subset) == len(set(subset)) == 10
    assert Counter(labels[i] for i in subset) == {"a": 5, "b": 3, "c": 2}
    assert stratified_subset(labels, 1000, seed=5) == list(range(len(labels)))
