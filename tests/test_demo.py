"""The README's first command works: `SMOKE=1 make demo` trains, calibrates and benches on 64 packaged rows."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_smoke_demo_runs_and_prints_the_per_exit_table():
    env = {**os.environ, "SMOKE": "1"}
    done = subprocess.run(["make", "demo"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "per-exit dev accuracy" in done.stdout
    assert "(teacher)" in done.stdout
    demo = ROOT / "runs" / "demo-smoke"
    for path in ("geep/model.safetensors", "geep/exit_table.safetensors", "fastbert/model.safetensors",
                 "bench/bench.json", "bench/report.md", "bench/curves.png"):
        assert (demo / path).is_file(), path
    assert "stored as defaults" in done.stdout  # calibrate ran
    assert "geep-verify" in done.stdout and "curves.png" in done.stdout  # bench summary and where to look
