"""The bench's report: ``report.md``, a short terminal summary, and writing every output of a run."""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from geep.bench.plots import plot_curves
from geep.bench.result import BenchResult, by_policy, group_records
from geep.evaluation.metrics import pareto_frontier
from geep.io import write_text_atomic

def write_outputs(result: BenchResult, directory: str | Path) -> dict[str, Path]:
    """Writes ``bench.json``, ``report.md`` and ``curves.png`` into ``directory`` (created), each atomically."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"json": directory / "bench.json", "report": directory / "report.md", "curves": directory / "curves.png"}
    write_text_atomic(paths["json"], json.dumps(result.to_dict(), indent=1, ensure_ascii=False) + "\n")
    write_text_atomic(paths["report"], render_report(result, curves=paths["curves"].name))
    plot_curves(result, paths["curves"])
    return paths


def summary_rows(result: BenchResult, max_drop: float = 1.0) -> list[dict[str, Any]]:
    """Per (model, batch size, policy): the fastest timed point whose accuracy is at most ``max_drop`` points
    below ``full``'s (the record, or None where no timed point is that accurate), with ``full``'s record."""
    rows = []
    for (name, batch_size), records in group_records(result.records).items():
        full = next(r for r in records if r["policy"] == "full")
        floor = full["accuracy"] - max_drop / 100.0 - 1e-12
        for policy, pts in by_policy(records).items():
            ok = [p for p in pts if p["timed"] and p["accuracy"] >= floor]
            best = max(ok, key=lambda p: (p["wall_speedup"], p["accuracy"])) if ok else None
            rows.append({"model": name, "objective": full["objective"], "batch_size": batch_size, "policy": policy,
                         "full": full, "best": best})
    return rows


def format_summary(result: BenchResult, max_drop: float = 1.0) -> str:
    """A short plain-text table of :func:`summary_rows`, for the terminal."""
    lines = [f"fastest timed point within {max_drop:g} point(s) of full ({result.header['device']}, "
             f"N = {result.header['n']}):"]
    head = f"{'model':<24} {'batch':>5}  {'policy':<12} {'knob':>7} {'accuracy':>9} {'wall':>7} {'FLOPs':>7} " \
           f"{'samples/s':>10}"
    lines.append(head)
    for row in summary_rows(result, max_drop):
        b = row["best"]
        label = f"{row['model']} ({row['objective']})"[:24]
        if b is None:
            lines.append(f"{label:<24} {row['batch_size']:>5}  {row['policy']:<12} {'(none timed that accurate)':>33}")
            continue
        lines.append(f"{label:<24} {row['batch_size']:>5}  {row['policy']:<12} {_fmt_knob(b['knob']):>7} "
                     f"{100 * b['accuracy']:>8.2f}% {b['wall_speedup']:>6.2f}x {b['flops_speedup']:>6.2f}x "
                     f"{b['samples_per_s']:>10.1f}")
    return "\n".join(lines)


def _fmt_knob(knob: Any) -> str:
    if knob is None:
        return "-"
    if isinstance(knob, int) or float(knob).is_integer():
        return str(int(knob))
    return f"{knob:.3g}"


def _spread(runs: Sequence[float] | None) -> str:
    """Half the range of the timed runs, relative to their median: how far to trust a wall speed-up."""
    if not runs:
        return "-"
    return f"±{50 * (max(runs) - min(runs)) / statistics.median(runs):.0f}%"


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def render_report(result: BenchResult, curves: str | None = "curves.png") -> str:
    """``report.md``: the run's facts, then per model and batch size the timed points and each policy's Pareto
    frontiers (accuracy vs wall speed-up over the timed points; accuracy vs FLOPs speed-up over the whole grid)."""
    h = result.header
    v = h.get("versions", {})
    commit = h.get("git_commit")
    lines = ["# geep bench", ""]
    lines.append(f"- data: `{h.get('data')}`, N = {h['n']}, sha256 `{h['data_sha256'][:16]}...`")
    lines.append(f"- device: {h['device']}; batch sizes {', '.join(map(str, h['batch_sizes']))}; median of "
                 f"{h['repeats']} interleaved repeats after {h['warmup']} warm-up run(s)")
    commit_text = "unknown" if not commit else commit[:10] + ("+dirty" if h.get("git_dirty") else "")
    lines.append(f"- geep {v.get('geep')} (commit {commit_text}), "
                 f"torch {v.get('torch')}, transformers {v.get('transformers')}, python {v.get('python')}")
    for name, m in h["models"].items():
        skipped = f"; skipped (no exit table): {', '.join(m['skipped_policies'])}" if m["skipped_policies"] else ""
        lines.append(f"- model `{name}` (objective {m['objective']}, exits {m['exit_layers']}): full accuracy "
                     f"{100 * m['full_accuracy']:.2f}%, macro-F1 {100 * m['full_macro_f1']:.2f}; tokenising "
                     f"{m['tokenize_seconds'] * 1000:.1f} ms ({_fmt(m['tokenize_samples_per_s'], '.0f')} samples/s)"
                     f"{skipped}")
    lines.append("")
    lines.append("Speed-ups are against `full` at the same batch size; wall speed-ups come from the same timing "
                 "rounds. `wall/FLOPs` is wall speed-up over FLOPs speed-up: below 1, the saving in arithmetic is "
                 "not all turned into time. `run spread`: half the range of a point's timed runs over their "
                 "median. `oracle` reads the true labels (reporting only).")
    if curves:
        lines += ["", f"![accuracy vs speed-up]({curves})"]
    for (name, batch_size), records in group_records(result.records).items():
        objective = records[0]["objective"]
        lines += ["", f"## `{name}` ({objective}), batch size {batch_size}", ""]
        lines.append("| policy | knob | accuracy | macro-F1 | mean layer | FLOPs speed-up | wall speed-up | "
                     "samples/s | wall/FLOPs | run spread |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in records:
            if not r["timed"]:
                continue
            ratio = r["wall_speedup"] / r["flops_speedup"] if r["flops_speedup"] else None
            note = " (reads labels)" if r["reporting_only"] else ""
            lines.append(f"| {r['policy']}{note} | {_fmt_knob(r['knob'])} | {100 * r['accuracy']:.2f}% | "
                         f"{100 * r['macro_f1']:.2f} | {r['mean_exit_layer']:.2f} | {r['flops_speedup']:.2f}x | "
                         f"{_fmt(r['wall_speedup'], '.2f', 'x')} | {_fmt(r['samples_per_s'], '.0f')} | "
                         f"{_fmt(ratio, '.2f')} | {_spread(r.get('wall_runs'))} |")
        lines += ["", "Pareto frontiers, slowest to fastest, as knob (accuracy, speed-up):", ""]
        for policy, pts in by_policy(records).items():
            if len(pts) == 1:
                continue  # full, oracle: one point, in the table above
            wall = pareto_frontier([p for p in pts if p["timed"]], "wall_speedup", "accuracy")
            flops = pareto_frontier(pts, "flops_speedup", "accuracy")
            lines.append(f"- `{policy}` wall: " + ", ".join(
                f"{_fmt_knob(p['knob'])} ({100 * p['accuracy']:.1f}%, {p['wall_speedup']:.2f}x)" for p in wall))
            lines.append(f"  FLOPs ({len(flops)} of {len(pts)} grid points): " + ", ".join(
                f"{_fmt_knob(p['knob'])} ({100 * p['accuracy']:.1f}%, {p['flops_speedup']:.2f}x)" for p in flops))
    return "\n".join(lines) + "\n"
