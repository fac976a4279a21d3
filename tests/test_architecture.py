"""Imports run one way (ARCHITECTURE.md): the import-linter contracts in pyproject.toml hold, they would catch an
upward import (a planted one breaks them), and no module of geep imports itself through a circle."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

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


# (file under src/geep, the import planted inside a function, what lint-imports must report)
PLANTED = [
    ("scheduling/scheduler.py", "from geep.modeling import model", "geep.scheduling.scheduler -> geep.modeling"),
    ("scheduling/strategies.py", "from geep.tokens import pad_batch", "geep.scheduling.strategies -> geep.tokens"),
    ("runtime/torch_backend.py", "from geep.policies import get_policy",
     "geep.runtime.torch_backend -> geep.policies"),
    ("serving/worker.py", "from geep.inference.predictor import predict",
     "geep.serving.worker -> geep.inference.predictor"),
    ("bench/runner.py", "from geep.inference import predict", "geep.bench.runner -> geep.inference"),
    ("evaluation/sweep.py", "from geep.inference.predictor import Predictor",
     "geep.evaluation.sweep -> geep.inference.predictor"),
]


@pytest.mark.parametrize("path, planted, report", PLANTED, ids=[p for p, _, _ in PLANTED])
def test_each_forbidden_import_is_caught(tmp_path, path, planted, report):
    """The scheduler imports only errors, a backend no policy, and no layer but the entry points the user-facing
    predictor (directly or through the ``geep.inference`` package): each planted import breaks a contract."""
    shutil.copytree(SRC / "geep", tmp_path / "geep", ignore=shutil.ignore_patterns("__pycache__"))
    module = tmp_path / "geep" / path
    module.write_text(module.read_text() + f"\n\ndef _planted():\n    {planted}  # noqa\n")
    done = lint_imports(tmp_path)
    assert done.returncode != 0
    assert report in done.stdout, done.stdout[-3000:]


def _calls(name: str) -> list[str]:
    """The modules under src/geep (relative paths) whose code calls ``name(``, outside the ``def`` of it."""
    pattern = re.compile(rf"(?<![\w.]){re.escape(name)}\(|\.{re.escape(name)}\(")
    found = []
    for path in sorted((SRC / "geep").rglob("*.py")):
        for line in path.read_text().splitlines():
            code = line.split("#", 1)[0]
            if pattern.search(code) and not code.lstrip().startswith("def "):
                found.append(str(path.relative_to(SRC / "geep")))
                break
    return found


def test_a_run_is_resolved_in_one_place():
    """The knob, the default policy and the precision are resolved by ``geep.inference.spec`` alone (issue 20):
    outside the policies, ``resolve_knob(`` is called in spec.py only, and so is ``check_precision(`` (beside
    the runtime's own list parser)."""
    assert [p for p in _calls("resolve_knob") if not p.startswith("policies/")] == ["inference/spec.py"]
    assert _calls("check_precision") == ["inference/spec.py", "runtime/precision.py"]
    assert _calls("_default_policy") == ["inference/spec.py"]


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


def test_a_local_ray_is_started_in_one_place():
    """Every local Ray (geep predict --ray's and the tests') comes from ray_data.start_local_ray, which runs its
    workers at the driver's niceness: a bare ray.init(num_cpus=...) gets Ray's niceness 15, and under load its actors
    starve for minutes (issue 20's hung suite)."""
    root = Path(__file__).resolve().parents[1]
    starts = sorted(str(path.relative_to(root)) for folder in ("src", "tests", "benchmarks")
                    for path in (root / folder).rglob("*.py")
                    if "ray.init(num_cpus" in path.read_text() and path.name != "test_architecture.py")
    assert starts == ["src/geep/integrations/ray_data.py"]
