"""Provenance of a bench run: versions, the git commit of the geep source and a hash of the benched rows."""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

def data_hash(texts: Sequence[str], text_pairs: Sequence[str] | None, labels: Sequence[str]) -> str:
    """sha256 (hex) of the benched rows: texts, text pairs (or null) and labels, in order, as compact JSON."""
    payload = json.dumps({"texts": list(texts), "text_pairs": None if text_pairs is None else list(text_pairs),
                          "labels": list(labels)}, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def environment() -> dict[str, Any]:
    """Versions (python, torch, transformers, geep) and the git commit of the geep source (null outside git)."""
    import transformers

    return {
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__, "geep": _version("geep")},
        "git_commit": _git(["rev-parse", "HEAD"]),
        "git_dirty": None if (status := _git(["status", "--porcelain", "--untracked-files=no"])) is None
        else bool(status),
        "platform": platform.platform(),
    }


def _git(args: list[str]) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=Path(__file__).resolve().parent, capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None
