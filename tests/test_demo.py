"""The README's first command works: `SMOKE=1 make demo` trains, calibrates and benches on 64 packaged rows.

It runs in a temporary copy of what make reads (the Makefile and pyproject.toml, mtimes kept), with the venv that
runs the tests (``VENV=``, and ``-o`` its stamp so make never reinstalls into it from the copy) and the demo's
output in a temporary directory (``DEMO_DIR=``): nothing is written into the checkout. The demo runs in a process
group of its own, and the whole group is killed when it ends, fails or runs past its own timeout, which lies below
pytest-timeout's, so no `geep bench` is left running after the test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.helpers import run_in_group

ROOT = Path(__file__).resolve().parents[1]
PYTEST_TIMEOUT_S = 600  # pyproject's [tool.pytest.ini_options] timeout, stated for this test
DEMO_TIMEOUT_S = 540  # the demo's own limit: it is killed (its whole process group) before pytest-timeout fires
SKIPPED = {".git", ".venv", "__pycache__", ".pytest_cache"}


def checkout_state(root: Path) -> dict[str, tuple[int, int]]:
    """(mtime, size) of every file of the checkout but git's, the venv's and Python's caches."""
    state = {}
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = [d for d in subdirs if d not in SKIPPED]
        for name in files:
            path = Path(directory, name)
            stat = path.lstat()
            state[str(path.relative_to(root))] = (stat.st_mtime_ns, stat.st_size)
    return state


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
@pytest.mark.timeout(PYTEST_TIMEOUT_S)
def test_smoke_demo_runs_and_prints_the_per_exit_table(tmp_path):
    venv = Path(sys.executable).parent.parent
    if not (venv / "bin" / "geep").is_file():
        pytest.skip(f"no geep command in {venv / 'bin'} (install geep into the venv that runs the tests)")
    copy = tmp_path / "checkout"
    copy.mkdir()
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy2(ROOT / name, copy / name)  # mtimes kept: the venv's stamp stays as fresh as it is
    demo = tmp_path / "demo-smoke"
    before = checkout_state(ROOT)
    env = {**os.environ, "SMOKE": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    argv = ["make", "-o", f"{venv}/.installed", "demo", f"VENV={venv}", f"DEMO_DIR={demo}"]
    try:
        done = run_in_group(argv, cwd=copy, env=env, timeout=DEMO_TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"`SMOKE=1 make demo` ran past {DEMO_TIMEOUT_S} s and was killed:\n{(e.stdout or '')[-2000:]}"
                    f"{(e.stderr or '')[-2000:]}")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "per-exit dev accuracy" in done.stdout
    assert "(teacher)" in done.stdout
    for path in ("geep/model.safetensors", "geep/exit_table.safetensors", "fastbert/model.safetensors",
                 "bench/bench.json", "bench/report.md", "bench/curves.png"):
        assert (demo / path).is_file(), path
    assert "stored as defaults" in done.stdout  # calibrate ran
    assert "geep-verify" in done.stdout and "curves.png" in done.stdout  # bench summary and where to look
    assert checkout_state(ROOT) == before, "the demo wrote into the checkout"


def test_a_command_past_its_timeout_has_its_whole_process_group_killed(tmp_path):
    """What the demo test relies on: a command and what it started (here a background child that would outlive
    it by 10 minutes) are all killed when its timeout ends the wait."""
    script = "sleep 600 & echo $!; wait"
    with pytest.raises(subprocess.TimeoutExpired) as caught:
        run_in_group(["sh", "-c", script], timeout=1)
    child = int(caught.value.stdout.split()[0])
    deadline = time.monotonic() + 60  # bounded: the kill is asynchronous, the child's reaping too
    while _alive(child):
        assert time.monotonic() < deadline, f"process {child} outlived its group's kill"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, killed and not yet reaped by its new parent, does not)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
