"""The benchmark's result: a header (versions, data, device, per-model facts) and one record per point."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Mapping, Sequence
from typing import Any

# Every record has exactly these keys. ``knob`` is None for full and oracle; ``exit_histogram`` maps each exit
# layer (a string key in JSON) to its row count; wall_speedup, samples_per_s, wall_seconds (the median) and
# wall_runs (every timed run's seconds, in round order) are None where the point was not timed; ``reporting_only``
# marks policies that read the true labels (oracle). ``precision`` (fp32, int8, ...) is the backend the point ran
# on; ``wall_speedup`` is over ``full`` at the same precision, ``wall_speedup_fp32`` over ``full`` at fp32 (None where
# the point was not timed or fp32 was not benched); ``flops_speedup`` does not depend on the precision.
# geep-verify's knob is a pair: ``knob`` is its tau and ``continue_threshold`` its t (None for the other policies;
# absent from records written before it existed).
# ``metric`` names the model's task's primary metric and ``score`` is its value, what the frontier and the summary read
# (a classifier's: accuracy, so its ``score`` equals ``accuracy``; records written before tasks existed have neither,
# and are read with their accuracy as the score); ``accuracy`` is None for regression. ``flops_speedup_ref`` and
# ``wall_speedup_ref`` are over the bench's reference model's ``full`` (``reference`` names it; the header's
# ``reference`` too), so static baselines and cascades sit on the same axes as a multi-exit model; the wall one is
# timed in the same rounds as the record's own points. ``cascade_thresholds``: a cascade's threshold per member
# boundary (``knob`` is then its member policy's knob), else None. Records written before these existed lack them.
RECORD_FIELDS = ("model", "objective", "policy", "knob", "batch_size", "accuracy", "macro_f1", "mean_exit_layer",
                 "exit_histogram", "flops_speedup", "wall_speedup", "samples_per_s", "wall_seconds", "wall_runs", "timed",
                 "reporting_only", "device", "precision", "wall_speedup_fp32", "continue_threshold", "metric",
                 "score", "flops_speedup_ref", "wall_speedup_ref", "reference", "cascade_thresholds",
                 "metrics")


@dataclass
class BenchResult:
    """What :func:`bench` measured: the run's ``header`` (versions, data, device, per-model facts) and one record
    per grid point per policy per batch size (see :data:`RECORD_FIELDS`)."""

    header: dict[str, Any]
    records: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {"header": self.header, "records": self.records}


def load_result(path: str | Path) -> BenchResult:
    """A :class:`BenchResult` read back from a ``bench.json``."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return BenchResult(data["header"], data["records"])


def group_records(records: Sequence[Mapping[str, Any]]) -> dict[tuple[str, int], list[Mapping[str, Any]]]:
    """Records grouped by (model, batch size), in first-seen order."""
    out: dict[tuple[str, int], list[Mapping[str, Any]]] = {}
    for r in records:
        out.setdefault((r["model"], r["batch_size"]), []).append(r)
    return out


def by_policy(records: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """Records grouped by policy, in first-seen order."""
    out: dict[str, list[Mapping[str, Any]]] = {}
    for r in records:
        out.setdefault(r["policy"], []).append(r)
    return out
