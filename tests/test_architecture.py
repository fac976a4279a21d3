"""Imports run one way (ARCHITECTURE.md): the import-linter contracts in pyproject.toml hold, they would catch an
upward import (a planted one breaks them), and no module of geep imports itself through a circle."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"


def lint_imports(source_root: Path) -> subprocess.CompletedProcess:
    """`lint-imports` on the geep package found under ``source_root``, with the project's contracts."""
    script = ("import sys; sys.path.insert(0, sys.argv[1]); from importlinter.cli import lint_imports_command; "
              "lint_imports_command(['--config', sys.argv[2], '--no-cache'])")
    return subprocess.run([sys.executable, "-c", script, str(source_root), str(ROOT / "pyproject.toml")],
                          capture_output=True, text=True, timeout=120, cwd=source_root)


def test_the_contracts_hold():
    done = lint_imports(SRC)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout and "Layers" in done.stdout


def test_an_upward_import_breaks_them(tmp_path):
    """The contracts are not vacuous: the model importing the predictor (inside a function) is caught."""
    shutil.copytree(SRC / "geep", tmp_path / "geep", ignore=shutil.ignore_patterns("__pycache__"))
    model = tmp_path / "geep" / "modeling" / "model.py"
    model.write_text(model.read_text() + "\n\ndef _climb():\n    from geep.inference import predict  # noqa\n")
    done = lint_imports(tmp_path)
    assert done.returncode != 0
    assert "geep.modeling.model -> geep.inference" in done.stdout


def test_no_module_imports_itself_through_a_circle():
    sys.path.insert(0, str(SRC))
    try:
        graph = grimp.build_graph("geep", exclude_type_checking_imports=False, cache_dir=None)
    finally:
        sys.path.remove(str(SRC))
    # The package's own __init__ re-exports the public API from the layers; so nothing inside may import it.
    assert graph.find_modules_that_directly_import("geep") == set()
    cycles = []
    for importer in sorted(graph.modules - {"geep"}):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            back = graph.find_shortest_chain(importer=imported, imported=importer)
            if back is not None:
                cycles.append((importer, *back))
    assert not cycles, cycles[:3]
