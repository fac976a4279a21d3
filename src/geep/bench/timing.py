"""Wall-clock timing: warm-up, interleaved round-robin repeats, device synchronisation, medians."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

def time_interleaved(runs: Sequence[Callable[[], Any]], *, repeats: int, warmup: int = 1,
                     sync: Callable[[], None] | None = None,
                     on_run: Callable[[], None] | None = None) -> tuple[list[Any], list[list[float]]]:
    """Times each of ``runs`` ``repeats`` times, round-robin, after ``warmup`` untimed rounds.

    Round r runs every point once, starting at point ``r mod P`` (P points), so drift and any order effect
    spread over all points alike. ``sync`` (``torch.cuda.synchronize`` on a GPU) is called before the clock
    starts and before it stops. ``on_run`` is called after every run (a progress bar).
    Returns the outputs of the first warm-up round (None each without warm-up) and ``seconds[point][repeat]``.
    """
    P = len(runs)
    outputs: list[Any] = [None] * P
    for w in range(warmup):
        for i, run in enumerate(runs):
            out = run()
            if w == 0:
                outputs[i] = out
            if on_run is not None:
                on_run()
    seconds: list[list[float]] = [[] for _ in range(P)]
    for r in range(repeats):
        for j in range(P):
            i = (j + r) % P
            if sync is not None:
                sync()
            start = time.perf_counter()
            runs[i]()
            if sync is not None:
                sync()
            seconds[i].append(time.perf_counter() - start)
            if on_run is not None:
                on_run()
    return outputs, seconds


def describe_device(device: torch.device) -> str:
    """``"cpu (2 threads)"`` or the CUDA device's name, e.g. ``"cuda:0 (NVIDIA H100 80GB HBM3)"``."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    if device.type == "cpu":
        threads = torch.get_num_threads()
        return f"cpu ({threads} thread{'' if threads == 1 else 's'})"
    return str(device)


def median_seconds(fn: Callable[[], Any], repeats: int) -> tuple[Any, float]:
    out = fn()  # warm-up (and the value kept)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return out, statistics.median(times)
