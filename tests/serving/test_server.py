"""`geep serve` as a process: SIGTERM with requests in flight lets them complete, then the process exits 0."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from geep.inference import predict
from tests.serving.conftest import FOREVER_MS, WAIT_S

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def poll(condition, timeout: float = WAIT_S, every: float = 0.05) -> None:
    """Calls ``condition`` until it is true; fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(every)


def queue_rows(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=WAIT_S).text
    return next(float(line.split()[1]) for line in text.splitlines() if line.startswith("geep_queue_rows "))


def test_sigterm_finishes_the_requests_in_flight_then_exits_0(tiny, tmp_path):
    model, texts, knob, early, late = tiny
    model.save_pretrained(tmp_path / "model")
    # Batches of 64 that never fill before the wait ends: the requests stay in flight until SIGTERM flushes them.
    command = [sys.executable, "-m", "geep.cli.main", "serve", "--model", str(tmp_path / "model"), "--port", "0",
               "--policy", "fastbert", "--threshold", repr(knob), "--max-batch", "64", "--max-wait-ms",
               str(FOREVER_MS), "--threads", "1"]
    env = {**os.environ, "PYTHONPATH": os.path.join(ROOT, "src")}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
        first = lines.get(timeout=WAIT_S)
        url = first.split(" on ")[1].split()[0]
        poll(lambda: httpx.get(f"{url}/ready", timeout=WAIT_S).status_code == 200)
        bodies = [{"inputs": [late[0], early[0]]}, {"inputs": early[1]}, {"inputs": late[1:4]}]
        with ThreadPoolExecutor(len(bodies)) as pool:
            pending = [pool.submit(httpx.post, f"{url}/predict", json=b, timeout=WAIT_S) for b in bodies]
            poll(lambda: queue_rows(url) == 6)
            assert not any(f.done() for f in pending)
            proc.send_signal(signal.SIGTERM)
            responses = [f.result(timeout=WAIT_S) for f in pending]
        assert proc.wait(timeout=WAIT_S) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=WAIT_S)
    assert [r.status_code for r in responses] == [200, 200, 200]
    got = [p["exit_layer"] for p in responses[2].json()["predictions"]]
    assert got == predict(model, late[1:4], policy="fastbert", knob=knob).exit_layer.tolist()
