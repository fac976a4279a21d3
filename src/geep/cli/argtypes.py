"""argparse types for flags whose bad values are refused at parse time, before any work (one line, exit 2)."""

from __future__ import annotations

import argparse
import math

from geep.errors import GeepError


def finite_float(text: str) -> float:
    """A finite number: 'nan' and 'inf' parse as floats but meet no target, so they are refused here."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value



def set_threads(threads: int | None) -> None:
    """``--threads``: torch's CPU threads (None: torch's own); GeepError below 1. One check for every command."""
    if threads is None:
        return
    if threads < 1:
        raise GeepError(f"--threads must be at least 1, got {threads}")
    import torch

    torch.set_num_threads(threads)


# The most knobs per policy `geep calibrate` and `geep bench` score (a knob step of 0.001 on [0, 1]): each is a run of
# the scheduler over the dev rows, and geep-verify scores 11 times as many pairs; more only takes longer.
MAX_GRID_POINTS = 1001


def check_grid_points(value: int) -> int:
    """``--grid-points`` in 2..MAX_GRID_POINTS (GeepError otherwise)."""
    if not 2 <= value <= MAX_GRID_POINTS:
        raise GeepError(f"--grid-points must be in 2..{MAX_GRID_POINTS}, got {value}")
    return value
