"""Checking a ``--ray`` input before any actor starts: the files, their format and their columns (no rows read).

A file or a directory (its top-level files) of ``.csv``, ``.tsv``, ``.jsonl`` (or line-delimited ``.json``) or
``.parquet`` files, all of one format and with the same columns, holding the columns the job reads. Everything
wrong is a one-line GeepError, in today's words where ``geep predict`` has them.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from geep.errors import GeepError

SUPPORTED = (".csv", ".tsv", ".json", ".jsonl", ".parquet")


@dataclass(frozen=True)
class InputFiles:
    """The files of a job (sorted), their one format (a suffix) and their columns."""

    paths: tuple[Path, ...]
    kind: str
    columns: tuple[str, ...]


def scan_input(path: str | os.PathLike, required: list[str], *, encoding: str | None = None) -> InputFiles:
    """The files under ``path`` and their shared columns, which must include every name of ``required``."""
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
    return InputFiles(tuple(paths), kinds[0], tuple(columns[first]))


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
