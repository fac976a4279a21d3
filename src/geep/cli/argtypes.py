"""argparse types for flags whose bad values are refused at parse time, before any work (one line, exit 2)."""

from __future__ import annotations

import argparse
import math


def finite_float(text: str) -> float:
    """A finite number: 'nan' and 'inf' parse as floats but meet no target, so they are refused here."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value
