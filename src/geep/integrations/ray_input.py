"""Checking a ``--ray`` input before any actor starts: the files, their format and their columns (no rows read).

A file or a directory (its top-level files) of ``.csv``, ``.tsv``, ``.jsonl`` (or line-delimited ``.json``) or
``.parquet`` files, all of one format and with the same columns, holding the columns the job reads. The text
columns hold texts: JSON lines are parsed here, every line (a line that is not JSON, a text that is a number or a
list, a lone surrogate: one line naming the file and the line, where Ray would print pages of its tasks'
tracebacks); a parquet text column must be of a string type. Everything wrong is a one-line GeepError, in today's
words where ``geep predict`` has them.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from geep.errors import GeepError
from geep.tokens import unicode_problem

SUPPORTED = (".csv", ".tsv", ".json", ".jsonl", ".parquet")


@dataclass(frozen=True)
class InputFiles:
    """The files of a job (sorted), their one format (a suffix) and their columns."""

    paths: tuple[Path, ...]
    kind: str
    columns: tuple[str, ...]


def scan_input(path: str | os.PathLike, required: list[str], *, encoding: str | None = None,
               texts: Sequence[str] = ()) -> InputFiles:
    """The files under ``path`` and their shared columns, which must include every name of ``required``;
    ``texts`` names the columns that must hold texts (strings or nulls)."""
    path = Path(path)
    if not path.exists():
        raise GeepError(f"no such file or directory: {path}")
    if path.is_dir():
        paths = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in SUPPORTED)
        if not paths:
            raise GeepError(f"{path} holds no {', '.join(SUPPORTED)} files")
    else:
        if path.suffix.lower() not in SUPPORTED:
            raise GeepError(f"{path}: unsupported file type '{path.suffix or '(none)'}' for --ray; supported: "
                            f"{', '.join(SUPPORTED)}")
        paths = [path]
    kinds = sorted({_kind(p) for p in paths})
    if len(kinds) > 1:
        raise GeepError(f"{path} mixes file types ({', '.join(kinds)}); give files of one format")
    columns = {p: _columns(p, kinds[0], encoding) for p in paths}
    first = paths[0]
    for p in paths[1:]:
        if columns[p] != columns[first]:
            raise GeepError(f"the files of {path} have different columns: {first.name} has "
                            f"{', '.join(columns[first])}; {p.name} has {', '.join(columns[p])}")
    for name in required:
        if name not in columns[first]:
            raise GeepError(f"{first} has no column '{name}'; its columns are: {', '.join(columns[first])}")
    for p in paths:
        if kinds[0] == ".jsonl":
            _check_jsonl_texts(p, encoding, texts)
        elif kinds[0] == ".parquet":
            _check_parquet_texts(p, texts)
    return InputFiles(tuple(paths), kinds[0], tuple(columns[first]))


def _check_jsonl_texts(path: Path, encoding: str | None, texts: Sequence[str]) -> None:
    """Every line of a JSON lines file is a JSON object whose text columns hold a string or null."""
    with open(path, encoding=encoding or "utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line.rstrip("\r\n"))
            except json.JSONDecodeError as e:
                raise GeepError(f"{path}: line {number} is not JSON: {e.msg} (column {e.colno})") from None
            if not isinstance(record, dict):
                raise GeepError(f"{path}: line {number} is not a JSON object")
            for name in texts:
                value = record.get(name)
                if value is not None and not isinstance(value, str):
                    raise GeepError(f"{path}: line {number}: '{name}' is {_json_kind(value)}, not a text (write texts "
                                    "as strings)")
                problem = None if value is None else unicode_problem(value)
                if problem is not None:
                    raise GeepError(f"{path}: line {number}: '{name}' is not valid Unicode text: {problem}")


def _json_kind(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    return {int: "a number", float: "a number", list: "a list", dict: "an object"}.get(type(value), "not a string")


def _check_parquet_texts(path: Path, texts: Sequence[str]) -> None:
    """A parquet file's text columns are of a string type (or all null)."""
    schema = pq.read_schema(path)
    for name in texts:
        kind = schema.field(name).type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind)
                or getattr(pa.types, "is_string_view", lambda _: False)(kind)):
            raise GeepError(f"{path}: column '{name}' holds {kind}, not texts (write texts as strings)")


def _kind(path: Path) -> str:
    suffix = path.suffix.lower()
    return ".jsonl" if suffix == ".json" else suffix


def _columns(path: Path, kind: str, encoding: str | None) -> list[str]:
    if path.stat().st_size == 0:
        raise GeepError(f"{path} has no rows")
    if kind in (".csv", ".tsv"):
        return _csv_columns(path, "\t" if kind == ".tsv" else ",", encoding)
    if kind == ".jsonl":
        return _jsonl_columns(path, encoding)
    try:
        return list(pq.read_schema(path).names)
    except Exception as e:  # pyarrow raises its own types for a file that is not parquet
        raise GeepError(f"could not read {path}: {str(e).splitlines()[0]}") from None


def _csv_columns(path: Path, delimiter: str, encoding: str | None) -> list[str]:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # a first row may hold a whole book
    try:
        with open(path, encoding=encoding or "utf-8-sig", newline="") as f:
            header = next((row for row in csv.reader(f, delimiter=delimiter) if row), None)
    except UnicodeDecodeError:
        raise GeepError(f"{path}: cannot decode its bytes as {encoding or 'UTF-8'}; pass the file's encoding with "
                        "--encoding (e.g. --encoding latin-1)") from None
    if header is None:
        raise GeepError(f"{path} has no rows")
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates:
        raise GeepError(f"{path}: duplicate column name(s): {', '.join(duplicates)}")
    return header


def _jsonl_columns(path: Path, encoding: str | None) -> list[str]:
    with open(path, encoding=encoding or "utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                if line.lstrip().startswith("["):
                    raise GeepError(f"{path} is a JSON array; --ray reads JSON lines (one object per line)") from None
                raise GeepError(f"{path}: line {number} is not JSON: {e.msg}") from None
            if not isinstance(record, dict):
                raise GeepError(f"{path}: line {number} is not a JSON object")
            return list(record)
    raise GeepError(f"{path} has no rows")
