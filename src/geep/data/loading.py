"""Reading the user's data: a file or a packaged set in, plain Python lists out, one-line errors on bad input.

A data argument (``--train``, ``--eval``, ...) is a path to a ``.csv``, ``.tsv``, ``.json``, ``.jsonl`` or
``.parquet`` file, a CoNLL column file (``.conll``: token classification), a directory written by ``Dataset.save_to_disk``, or ``NAME[:split]`` naming a packaged set
(see ``geep.datasets``). Everything the user can get wrong here raises ``GeepError`` with one line.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import json
import logging
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
from datasets.exceptions import DatasetsError

import geep.data.packaged as packaged
from geep.data.token_data import read_conll
from geep.errors import GeepError
from geep.tokens import unicode_problem

logger = logging.getLogger(__name__)

SUPPORTED_EXTENSIONS = (".csv", ".tsv", ".json", ".jsonl", ".parquet", ".conll")
_SUPPORTED_TEXT = ", ".join(SUPPORTED_EXTENSIONS) + ", or a directory written by Dataset.save_to_disk"
_MAX_NAMED = 5  # how many offending labels or rows an error message names


@dataclass
class ColumnData:
    """The columns a model needs, as plain lists of equal length (one entry per data row)."""

    texts: list[str]
    text_pairs: list[str] | None
    labels: list[str] | None
    ids: list | None


# --- loading --------------------------------------------------------------------------------------------------


def load_dataset_spec(spec: str, encoding: str | None = None) -> datasets.Dataset:
    """Load the data a command-line argument names: an existing path first, else a packaged ``NAME[:split]``.

    ``encoding`` applies to CSV, TSV and JSON files (default UTF-8). The result is held in memory, so editing a
    file and loading it again gives the new rows, never a stale cache.
    """
    path = Path(spec)
    if path.exists():
        ds = _load_path(path, encoding)
    else:
        name, _, split = spec.partition(":")
        if name not in packaged.PACKAGED_SETS:
            known = ", ".join(sorted(packaged.PACKAGED_SETS))
            raise GeepError(f"no such file: {spec} (nor a packaged data set; known: {known})")
        ds = packaged.load_packaged(name, split or "train")
    if len(ds) == 0:
        raise GeepError(f"{spec} has no rows")
    return ds


def _load_path(path: Path, encoding: str | None) -> datasets.Dataset:
    if path.is_dir():
        return _load_saved_dir(path)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_EXTENSIONS:
        raise GeepError(f"{path}: unsupported file type '{suffix or '(none)'}'; supported: {_SUPPORTED_TEXT}")
    if encoding is not None:
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise GeepError(f"unknown encoding: {encoding}") from None
    if path.stat().st_size == 0:
        raise GeepError(f"{path} has no rows")
    try:
        # A throw-away cache directory plus keep_in_memory: nothing stale is ever read back from ~/.cache.
        with _quiet_datasets(), tempfile.TemporaryDirectory(prefix="geep-data-") as cache_dir:
            ds = _READERS[suffix](path, encoding, cache_dir)
            # pyarrow's JSON reader lets invalid UTF-8 through; find it now rather than at first use.
            ds.data.table.validate(full=True)
    except GeepError:
        raise
    except (DatasetsError, pa.ArrowException, ValueError, OSError) as e:  # UnicodeDecodeError is a ValueError
        if _is_decode_error(e):
            raise GeepError(
                f"{path}: cannot decode its bytes as {encoding or 'UTF-8'}; "
                "pass the file's encoding with --encoding (e.g. --encoding latin-1)"
            ) from e
        where = _json_syntax_error(path, encoding) if suffix in (".json", ".jsonl") else None
        if where is not None:  # pyarrow and pandas name a byte position, often of an earlier line
            raise GeepError(f"could not read {path}: not valid JSON at {where}") from e
        problem = _csv_problem(path, encoding, "\t" if suffix == ".tsv" else ",") if suffix in (".csv", ".tsv") \
            else _json_surrogate(path, encoding) if suffix in (".json", ".jsonl") else None
        if problem is not None:  # pandas' own words ("Error tokenizing data. C error: ...") said in geep's
            raise GeepError(f"could not read {path}: {problem}") from e
        raise GeepError(f"could not read {path}: {_root_message(e)}") from e
    return ds


def _json_syntax_error(path: Path, encoding: str | None) -> str | None:
    """'line N, column M: why' of the first JSON syntax error in a JSON or JSON Lines file, or None.

    A ``.jsonl`` file, or a ``.json`` file that is not one JSON document but parses up to "Extra data", is JSON
    Lines: its lines are parsed one by one to find the first bad one.
    """
    try:
        text = path.read_text(encoding=encoding or "utf-8-sig")
    except (OSError, ValueError):
        return None
    if path.suffix.lower() == ".json":
        try:
            json.loads(text)
            return None
        except json.JSONDecodeError as e:
            if e.msg != "Extra data":
                return f"line {e.lineno}, column {e.colno}: {e.msg}"
    for lineno, line in enumerate(text.split("\n"), 1):
        if line.strip():
            try:
                json.loads(line)
            except json.JSONDecodeError as e:
                return f"line {lineno}, column {e.colno}: {e.msg}"
    return None


def _csv_problem(path: Path, encoding: str | None, delimiter: str) -> str | None:
    """What is wrong with a CSV/TSV file the reader refused, in geep's words, or None: a row with more fields than
    the header, or a quoted field that is never closed (the first found, by line)."""
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    start = 1
    try:
        with open(path, encoding=encoding or "utf-8-sig", newline="") as f:
            reader = csv.reader(f, delimiter=delimiter, strict=True)
            header = next(reader, None) or []
            start = reader.line_num + 1
            for row in reader:
                if len(row) > len(header):
                    where = "a tab" if delimiter == "\t" else f"a {delimiter!r}"
                    return (f"line {reader.line_num} has {len(row)} fields but the header has {len(header)} "
                            f"(quote a field that holds {where})")
                start = reader.line_num + 1
    except csv.Error:
        return f"a quoted field that starts on line {start} is never closed (or a quote inside it is not doubled)"
    except (OSError, ValueError):
        return None
    return None


def _json_surrogate(path: Path, encoding: str | None) -> str | None:
    """'line N: ...' of the first JSON line holding a lone surrogate (a ``\\ud800`` escape), which no reader can
    turn into text, or None."""
    try:
        lines = path.read_text(encoding=encoding or "utf-8-sig").split("\n")
    except (OSError, ValueError):
        return None
    for lineno, line in enumerate(lines, 1):
        try:
            problem = _unicode_in(json.loads(line)) if line.strip() else None
        except json.JSONDecodeError:
            return None
        if problem is not None:
            return f"line {lineno} is not valid Unicode text: {problem}"
    return None


def _unicode_in(value: Any) -> str | None:
    if isinstance(value, str):
        return unicode_problem(value)
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return next((p for p in map(_unicode_in, items) if p is not None), None)


def _read_csv(path: Path, encoding: str | None, cache_dir: str, delimiter: str = ",") -> datasets.Dataset:
    # Every column is read as a string: pandas would otherwise turn the text "007" into 7 and "NA" into a
    # missing value. That needs the column names up front, so read the header (and check a data row exists).
    header = _csv_header(path, encoding, delimiter)
    features = datasets.Features({name: datasets.Value("string") for name in header})
    kwargs: dict[str, Any] = {"encoding": encoding} if encoding else {}
    return datasets.Dataset.from_csv(
        str(path), delimiter=delimiter, features=features, na_filter=False,
        keep_in_memory=True, cache_dir=cache_dir, **kwargs,
    )


def _csv_header(path: Path, encoding: str | None, delimiter: str) -> list[str]:
    """The column names; GeepError when there is no header or no data row.

    Only the header goes through the csv module (its fields are names). Whether a data row follows is seen from the
    raw lines, never parsed: the csv module refuses fields over 128 KB (a long document), which the reader that
    loads the rows (pandas) reads whole.
    """
    with open(path, encoding=encoding or "utf-8-sig", newline="") as f:
        header = next((row for row in csv.reader(f, delimiter=delimiter) if row), None)
        if header is None or not any(line.strip("\r\n") for line in f):  # csv skips only blank lines too
            raise GeepError(f"{path} has no rows")
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates:
        raise GeepError(f"{path}: duplicate column name(s): {', '.join(duplicates)}")
    return header


def _read_tsv(path: Path, encoding: str | None, cache_dir: str) -> datasets.Dataset:
    return _read_csv(path, encoding, cache_dir, delimiter="\t")


def _read_json(path: Path, encoding: str | None, cache_dir: str) -> datasets.Dataset:
    if not path.read_bytes().strip():
        raise GeepError(f"{path} has no rows")
    kwargs: dict[str, Any] = {"encoding": encoding} if encoding else {}
    return datasets.Dataset.from_json(str(path), keep_in_memory=True, cache_dir=cache_dir, **kwargs)


def _read_parquet(path: Path, encoding: str | None, cache_dir: str) -> datasets.Dataset:
    return datasets.Dataset.from_parquet(str(path), keep_in_memory=True, cache_dir=cache_dir)


_READERS: dict[str, Callable[[Path, str | None, str], datasets.Dataset]] = {
    ".csv": _read_csv,
    ".tsv": _read_tsv,
    ".json": _read_json,
    ".jsonl": _read_json,
    ".parquet": _read_parquet,
    ".conll": lambda path, encoding, cache_dir: read_conll(path),  # words and tags (geep.data.token_data)
}


def _load_saved_dir(path: Path) -> datasets.Dataset:
    try:
        with _quiet_datasets():
            loaded = datasets.load_from_disk(str(path), keep_in_memory=True)
    except FileNotFoundError:
        raise GeepError(f"{path} is a directory but not a data set written by Dataset.save_to_disk") from None
    if isinstance(loaded, datasets.DatasetDict):
        if len(loaded) != 1:
            raise GeepError(f"{path} holds several splits ({', '.join(loaded)}); save one split on its own")
        (loaded,) = loaded.values()
    return loaded


@contextlib.contextmanager
def _quiet_datasets() -> Iterator[None]:
    """Silence ``datasets``' progress bars and its own error log while we read: we raise a clearer error."""
    verbosity = datasets.utils.logging.get_verbosity()
    bars_were_off = datasets.are_progress_bars_disabled()
    datasets.utils.logging.set_verbosity(logging.CRITICAL)
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        datasets.utils.logging.set_verbosity(verbosity)
        if not bars_were_off:
            datasets.enable_progress_bars()


def _causes(e: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or cur.__context__


def _is_decode_error(e: BaseException) -> bool:
    for cause in _causes(e):
        if isinstance(cause, UnicodeDecodeError):
            return True
        message = str(cause).lower().replace("-", "")
        if "utf8" in message and "invalid" in message:  # pyarrow's wording: "Invalid UTF8 sequence"
            return True
    return False


def _root_message(e: BaseException) -> str:
    root = list(_causes(e))[-1]
    lines = str(root).strip().splitlines()
    return lines[0] if lines else type(root).__name__


# --- columns --------------------------------------------------------------------------------------------------


def get_columns(
    ds: datasets.Dataset,
    text_column: str,
    text_pair_column: str | None,
    label_column: str | None,
    *,
    source: str,
    require_labels: bool,
    id_column: str | None = None,
) -> ColumnData:
    """Pull the text (and optional pair, label and id) columns out of ``ds`` as plain lists.

    Texts must be strings: a number, a boolean, a list or an object in a text column (JSON lines, parquet) is a
    GeepError naming the row, never turned into the text "5"; so is a string that is not valid Unicode (a lone
    surrogate from a JSON ``\\ud800`` escape). A missing or whitespace-only text becomes "" (valid input: the row
    is kept and answered, and one warning line says how many rows have no text). Labels become stripped
    strings (an int 1 or a float 1.0 becomes "1"; a list, a multi-label row's labels, a list of stripped strings).
    With ``require_labels`` every row needs a label; without it an absent label column gives ``labels=None`` and a
    missing label becomes "". ``source`` names the data in error messages.
    """
    texts = [_as_text(v, row, text_column, source) for row, v in enumerate(_values(ds, text_column, source), 1)]
    pairs = None
    if text_pair_column is not None:
        values = _values(ds, text_pair_column, source)
        pairs = [_as_text(v, row, text_pair_column, source) for row, v in enumerate(values, 1)]
    _warn_empty_texts(source, (text_column, texts), (text_pair_column, pairs))
    labels = None
    if label_column is None:
        if require_labels:
            raise GeepError(f"{source}: a label column is required")
    elif require_labels or label_column in ds.column_names:
        labels = [_as_label(v) for v in _column(ds, label_column, source)]
        if require_labels:
            _check_no_missing_labels(labels, label_column, source)
    ids = list(_column(ds, id_column, source)) if id_column is not None else None
    return ColumnData(texts=texts, text_pairs=pairs, labels=labels, ids=ids)


def _column(ds: datasets.Dataset, name: str, source: str) -> list:
    if name not in ds.column_names:
        present = ", ".join(ds.column_names)
        raise GeepError(f"{source} has no column '{name}'; its columns are: {present}")
    return ds.data.column(name).to_pylist()


def _values(ds: datasets.Dataset, name: str, source: str) -> list:
    """A column's values; a column ``datasets`` holds as JSON text (a JSON lines column of mixed types, e.g.
    strings and numbers) is decoded, so each value is what the file holds."""
    values = _column(ds, name, source)
    if type(ds.features.get(name)).__name__ == "Json":
        values = [None if v is None else json.loads(v) for v in values]
    return values


def _as_text(value: Any, row: int, column: str, source: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        kind = "a number" if isinstance(value, (int, float)) and not isinstance(value, bool) else (
            "a boolean" if isinstance(value, bool) else "a list" if isinstance(value, list) else
            "an object" if isinstance(value, dict) else type(value).__name__)
        shown = json.dumps(value, default=str)[:60]
        raise GeepError(f"{source}: row {row} of column '{column}' is {kind}, not a text: {shown} (write texts as "
                        "strings)")
    problem = unicode_problem(value)
    if problem is not None:
        raise GeepError(f"{source}: row {row} of column '{column}' is not valid Unicode text: {problem}")
    return value if value.strip() else ""


def _warn_empty_texts(source: str, *columns: tuple[str | None, list[str] | None]) -> None:
    """One warning line counting the rows with no text (empty, whitespace-only, null or missing) per column."""
    counts = [f"{sum(t == '' for t in texts)} of {len(texts)} rows have no text in column '{name}'"
              for name, texts in columns if texts is not None and "" in texts]
    if counts:
        logger.warning("%s: %s (empty, whitespace-only, null or missing); they are kept, read as empty texts",
                       source, "; ".join(counts))


def _as_label(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):  # a list column: a multi-label row's labels, each a stripped name
        return ["" if v is None else str(v).strip() for v in value]
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # a numeric column with a gap arrives as floats: 1.0 means label "1"
    return str(value).strip()


def _check_no_missing_labels(labels: list[str], column: str, source: str) -> None:
    missing = [row for row, label in enumerate(labels, 1) if label == ""]
    if missing:
        more = f" (and {len(missing) - 1} more rows)" if len(missing) > 1 else ""
        raise GeepError(f"{source}: data row {missing[0]} has no label in column '{column}'{more}")


# --- labels ---------------------------------------------------------------------------------------------------


def build_label_names(labels: list[str]) -> list[str]:
    """The label vocabulary of a training set: its distinct names, sorted (index i is class i)."""
    return sorted(set(labels))


def encode_labels(labels: list[str], label_names: list[str], *, source: str) -> list[int]:
    """Map label names to class indices; a label the model never saw in training is an error naming it."""
    index = {name: i for i, name in enumerate(label_names)}
    unseen = sorted(set(labels) - index.keys())
    if unseen:
        named = ", ".join(repr(u) for u in unseen[:_MAX_NAMED])
        more = f" (and {len(unseen) - _MAX_NAMED} more)" if len(unseen) > _MAX_NAMED else ""
        known = ", ".join(repr(n) for n in label_names)
        raise GeepError(f"{source}: label(s) never seen in training: {named}{more}; known labels: {known}")
    return [index[label] for label in labels]
