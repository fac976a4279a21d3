"""The one rule for what a command writes, checked before any work.

A command whose output is a new file or directory (``predict --output``, ``bench --output``, ``train --output``):

- refuses an existing output file, or a non-empty output directory, unless ``--overwrite``;
- refuses an output that would replace what the run reads: a file that resolves to an input file (symlinks, hard
  links and relative paths included), or anything inside ``--model`` or inside an input directory; an output
  directory must not hold an input file either (the command writes fixed names into it);
- checks that it can write there (by creating and removing a probe file: ``os.access`` says yes to root even on
  a read-only file system).

``calibrate`` and ``build-table`` have no output: they update a model directory in place, and check only that
they can write into it (:func:`check_writable`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from geep.errors import GeepError
from geep.io import check_not_an_input, check_output_dir, writable

__all__ = ["check_output_dir", "check_output_file", "check_writable", "writable"]


def check_output_file(path: str | os.PathLike, *, overwrite: bool, suffixes: tuple[str, ...],
                      inputs: Iterable[str | os.PathLike] = (), models: Iterable[str | os.PathLike] = (),
                      flag: str = "--output") -> Path:
    """``path`` checked as a new output file: one of ``suffixes``, in an existing writable directory, not an
    existing file without ``overwrite``, not an input nor inside a model or input directory."""
    out = Path(path)
    if out.suffix.lower() not in suffixes:
        raise GeepError(f"{flag} must end in {' or '.join(suffixes)}, got {path}")
    if out.is_dir():
        raise GeepError(f"{flag} {path} is a directory")
    if not out.parent.is_dir():
        raise GeepError(f"the directory of {flag} {path} does not exist")
    check_not_an_input(out, inputs, models, flag)
    if not writable(out.parent):
        raise GeepError(f"cannot write into the directory of {flag} {path}")
    if out.exists() and not overwrite:
        raise GeepError(f"{flag} {path} exists; choose another file or pass --overwrite to replace it")
    return out


def check_writable(directory: str | os.PathLike, what: str) -> None:
    """GeepError naming ``what`` unless files can be created in ``directory`` (a model updated in place)."""
    if not writable(Path(directory)):
        raise GeepError(f"cannot write into {what} {directory}; it is updated in place, so it must be writable")
