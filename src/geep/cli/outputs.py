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
import tempfile
from collections.abc import Iterable
from pathlib import Path

from geep.errors import GeepError


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
    _check_not_an_input(out, inputs, models, flag)
    if not writable(out.parent):
        raise GeepError(f"cannot write into the directory of {flag} {path}")
    if out.exists() and not overwrite:
        raise GeepError(f"{flag} {path} exists; choose another file or pass --overwrite to replace it")
    return out


def check_output_dir(path: str | os.PathLike, *, overwrite: bool, inputs: Iterable[str | os.PathLike] = (),
                     models: Iterable[str | os.PathLike] = (), flag: str = "--output") -> Path:
    """``path`` checked as an output directory (created later if absent): not a file, empty unless
    ``overwrite``, writable, not inside a model or input directory and holding no input file."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise GeepError(f"{flag} {path} exists and is not a directory")
    _check_not_an_input(out, inputs, models, flag)
    if out.is_dir():
        held = [Path(p) for p in inputs if Path(p).is_file() and _same(Path(p).resolve().parent, out)]
        if held:
            raise GeepError(f"{flag} {path} holds the input {held[0]}; write to a directory of its own")
        if any(out.iterdir()) and not overwrite:
            raise GeepError(f"{flag} {path} is not empty; choose another directory or pass --overwrite")
    existing = out
    while not existing.exists():  # the directory is created later: the nearest existing one must take it
        existing = existing.parent
    if not existing.is_dir() or not writable(existing):
        raise GeepError(f"cannot write {flag} {path}: {existing} is not a writable directory")
    return out


def check_writable(directory: str | os.PathLike, what: str) -> None:
    """GeepError naming ``what`` unless files can be created in ``directory`` (a model updated in place)."""
    if not writable(Path(directory)):
        raise GeepError(f"cannot write into {what} {directory}; it is updated in place, so it must be writable")


def writable(directory: Path) -> bool:
    """Whether a file can be created in ``directory``: tried, not guessed."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".geep-write-check-", dir=directory)
    except OSError:
        return False
    os.close(fd)
    os.unlink(probe)
    return True


def _check_not_an_input(out: Path, inputs: Iterable[str | os.PathLike], models: Iterable[str | os.PathLike],
                        flag: str) -> None:
    for model in models:
        if _inside(out, Path(model)):
            raise GeepError(f"{flag} {out} lies inside the model directory {model}; write it elsewhere")
    for spec in inputs:
        source = Path(spec)
        if not source.exists():  # a packaged NAME[:split], not a path
            continue
        if source.is_dir() and _inside(out, source):
            raise GeepError(f"{flag} {out} lies inside the input {spec}; write it elsewhere")
        if source.is_file() and (_same(out, source) or (out.exists() and os.path.samefile(out, source))):
            raise GeepError(f"{flag} {out} is the input {spec}; writing it would replace the data being read")


def _same(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve()


def _inside(path: Path, directory: Path) -> bool:
    """Whether ``path`` is ``directory`` or lies under it, once symlinks and relative parts are resolved."""
    path, directory = path.resolve(), directory.resolve()
    return path == directory or directory in path.parents
