"""Writing files so that an interrupted run never leaves a partial file or loses the previous one, and the rule
for an output directory that the command line and Ray jobs share (``check_output_dir``)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Iterator

from geep.errors import GeepError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path beside ``path``; renames it onto ``path`` only if the block finishes.

    On any exception (KeyboardInterrupt included) the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes a private (0600) file; the result is an ordinary one
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Writes ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def default_dir_mode() -> int:
    """The mode a new directory gets under the process's umask (``mkdtemp`` makes 0700 ones): for a temporary
    directory that is renamed into place as an output."""
    return 0o777 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_output_dir(path: str | os.PathLike, *, overwrite: bool, inputs: Iterable[str | os.PathLike] = (),
                     models: Iterable[str | os.PathLike] = (), flag: str = "--output") -> Path:
    """``path`` checked as an output directory (created later if absent): not a file, empty unless
    ``overwrite``, writable, not inside a model or input directory and holding no input file."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise GeepError(f"{flag} {path} exists and is not a directory")
    check_not_an_input(out, inputs, models, flag)
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


def writable(directory: Path) -> bool:
    """Whether a file can be created in ``directory``: tried, not guessed."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".geep-write-check-", dir=directory)
    except OSError:
        return False
    os.close(fd)
    os.unlink(probe)
    return True


def check_not_an_input(out: Path, inputs: Iterable[str | os.PathLike], models: Iterable[str | os.PathLike],
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
