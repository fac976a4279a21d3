"""The bench's report: ``report.md``, a short terminal summary, and writing every output of a run."""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from geep.bench.frontier import budget_point, frontier_indices, record_exits_early
from geep.bench.plots import plot_curves, static_line, uses_reference
from geep.bench.result import BenchResult, by_policy, group_records
from geep.evaluation.metrics import metric_of, pareto_frontier, score_of
from geep.io import write_text_atomic
from geep.policies.base import knob_text as policy_knob_text

def write_outputs(result: BenchResult, directory: str | Path) -> dict[str, Path]:
    """Writes ``bench.json``, ``report.md`` and ``curves.png`` into ``directory`` (created), each atomically."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"json": directory / "bench.json", "report": directory / "report.md", "curves": directory / "curves.png"}
    write_text_atomic(paths["json"], json.dumps(result.to_dict(), indent=1, ensure_ascii=False) + "\n")
    write_text_atomic(paths["report"], render_report(result, curves=paths["curves"].name))
    plot_curves(result, paths["curves"])
    return paths


def precision_of(record: Mapping[str, Any]) -> str:
    """The precision a record ran at (records written before precisions existed ran at fp32)."""
    return record.get("precision") or "fp32"


def reference_full(records: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    """The ``full`` record every point is measured against: fp32's, else the first precision's."""
    fulls = [r for r in records if r["policy"] == "full"]
    return next((r for r in fulls if precision_of(r) == "fp32"), fulls[0])


def overall_speedup(record: Mapping[str, Any]) -> float | None:
    """A point's wall speed-up over ``full`` at fp32 where fp32 was benched, else over ``full`` at its precision."""
    value = record.get("wall_speedup_fp32")
    return record["wall_speedup"] if value is None else value


def summary_rows(result: BenchResult, max_drop: float = 1.0) -> list[dict[str, Any]]:
    """Per (model, batch size, precision, policy): the point "fastest within ``max_drop`` points of ``full`` at fp32"
    is read from: the fastest point of the policy's FLOPs frontier (over the knobs that can be timed) whose accuracy
    is at most ``max_drop`` points below ``full``'s, which the bench times (``geep.bench.frontier``); for a result
    written before the bench timed the frontier, where that point was not timed, the fastest timed point within the
    budget. ``best`` is the record, or None where no point is that accurate; ``full`` is the reference record.
    Speed is over ``full`` at fp32 (:func:`overall_speedup`)."""
    rows = []
    for (name, batch_size), records in group_records(result.records).items():
        full = reference_full(records)
        floor = score_of(full) - max_drop / 100.0
        for policy, pts in by_policy(records).items():
            for precision in dict.fromkeys(precision_of(p) for p in pts):
                mine = [p for p in pts if precision_of(p) == precision]
                frontier = frontier_indices(mine, lambda i: record_exits_early(mine[i]))
                j = budget_point(mine, frontier, floor)
                best = None if j is None else mine[frontier[j]]
                if best is None or not best["timed"]:
                    ok = [p for p in mine if p["timed"] and score_of(p) >= floor - 1e-12]
                    best = max(ok, key=lambda p: (overall_speedup(p), score_of(p))) if ok else None
                rows.append({"model": name, "objective": full["objective"], "batch_size": batch_size,
                             "policy": policy, "precision": precision, "full": full, "best": best})
    return rows


def format_summary(result: BenchResult, max_drop: float | None = None) -> str:
    """A short plain-text table of :func:`summary_rows` (``max_drop`` default: the bench's accuracy budget), for the
    terminal: each wall speed-up with its runs' spread, and how many interleaved runs its median is of."""
    h = result.header
    max_drop = h.get("accuracy_budget", 1.0) if max_drop is None else max_drop
    several = len({precision_of(r) for r in result.records}) > 1
    lines = [f"fastest point of each policy's FLOPs frontier within {max_drop:g} point(s) of full"
             f"{' at fp32' if several else ''} ({h['device']}, N = {h['n']}; wall: median of {h['repeats']} "
             "interleaved runs, spread = half their range over the median):"]
    metric = _name(metric_of(result.records[0])) if result.records else "accuracy"
    # a token classifier's second metric beside entity F1 (token accuracy), knob by knob
    token = bool(result.records) and "token_accuracy" in (result.records[0].get("metrics") or {}) \
        and metric_of(result.records[0]) != "token_accuracy"
    head = f"{'model':<24} {'batch':>5}  {'prec':<4} {'policy':<12} {'knob':>12} {metric:>9} {'wall':>7} " \
           f"{'spread':>6} {'FLOPs':>7} {'samples/s':>10}" + (f" {'token acc':>9}" if token else "")
    lines.append(head)
    for row in summary_rows(result, max_drop):
        b = row["best"]
        label = f"{row['model']} ({row['objective']})"[:24]
        start = f"{label:<24} {row['batch_size']:>5}  {row['precision']:<4} {row['policy']:<12}"
        if b is None:
            lines.append(f"{start} {'(none timed that accurate)':>38}")
            continue
        lines.append(f"{start} {knob_text(b):>12} {_pct(score_of(b), metric_of(b)):>9} {overall_speedup(b):>6.2f}x "
                     f"{_spread(b.get('wall_runs')):>6} {b['flops_speedup']:>6.2f}x {b['samples_per_s']:>10.1f}"
                     + (f" {100 * b['metrics']['token_accuracy']:>9.2f}" if token else ""))
    return "\n".join(lines)


def knob_text(record: Mapping[str, Any]) -> str:
    """A record's knob, rendered as every surface renders one (``geep.policies.base.knob_text``): the number, or
    geep-verify's ``tau/t`` (knob = tau, then its continuation threshold); a cascade's member knob, then one
    threshold per member boundary."""
    values = {} if record["knob"] is None else {"knob": record["knob"]}
    if record.get("continue_threshold") is not None:
        values["continue_threshold"] = record["continue_threshold"]
    values.update({f"cascade_{m}": x for m, x in enumerate(record.get("cascade_thresholds") or (), 1)})
    return policy_knob_text(values)


def _spread(runs: Sequence[float] | None) -> str:
    """Half the range of the timed runs, relative to their median: how far to trust a wall speed-up."""
    if not runs:
        return "-"
    return f"±{50 * (max(runs) - min(runs)) / statistics.median(runs):.0f}%"


def _pct(value: float | None, metric: str, digits: int = 2) -> str:
    """A score in points: ``95.12%`` for accuracy, ``87.31`` for another metric (micro-F1, Pearson x 100)."""
    if value is None:
        return "-"
    return f"{100 * value:.{digits}f}" + ("%" if metric == "accuracy" else "")


def _name(metric: str) -> str:
    return metric.replace("_", "-")


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
    budget = h.get("accuracy_budget", 1.0)
    lines.append(f"- device: {h['device']}; batch sizes {', '.join(map(str, h['batch_sizes']))}; median of "
                 f"{h['repeats']} interleaved repeats after {h['warmup']} warm-up run(s)")
    lines.append(f"- accuracy and FLOPs: {h.get('grid_points')} knobs per policy (geep-verify: tau x t pairs); timed: "
                 f"up to {h.get('timed_points')} knobs per policy along its FLOPs frontier, from the fastest within "
                 f"{budget:g} point(s) of `full` and its neighbours outwards")
    commit_text = "unknown" if not commit else commit[:10] + ("+dirty" if h.get("git_dirty") else "")
    lines.append(f"- geep {v.get('geep')} (commit {commit_text}), "
                 f"torch {v.get('torch')}, transformers {v.get('transformers')}, python {v.get('python')}")
    if len(h.get("precisions") or []) > 1:
        lines.append(f"- precisions {', '.join(h['precisions'])}, timed in the same rounds; full accuracy by precision: "
                     + "; ".join(f"`{name}` " + ", ".join(f"{p} {100 * a:.2f}%" for p, a in
                                                         m.get("full_accuracy_by_precision", {}).items())
                                 for name, m in h["models"].items()))
    for name, m in h["models"].items():
        skipped = f"; skipped (no exit table): {', '.join(m['skipped_policies'])}" if m["skipped_policies"] else ""
        if m.get("policies_not_for_model"):
            skipped += f"; not for this model (its task or exits): {', '.join(m['policies_not_for_model'])}"
        metric = m.get("metric", "accuracy")
        full_text = (f"full accuracy {100 * m['full_accuracy']:.2f}%, macro-F1 {100 * m['full_macro_f1']:.2f}"
                     if metric == "accuracy" else
                     f"task {m.get('task')}, full {_name(metric)} {_pct(m.get('full_score'), metric)} (x 100: the "
                     "budget and frontiers are in its points)")
        lines.append(f"- model `{name}` (objective {m['objective']}, exits {m['exit_layers']}): {full_text}; "
                     "tokenising "
                     f"{m['tokenize_seconds'] * 1000:.1f} ms ({_fmt(m['tokenize_samples_per_s'], '.0f')} samples/s)"
                     f"{skipped}")
    lines.append("")
    lines.append("Speed-ups are against `full` at the same batch size; wall speed-ups come from the same timing "
                 "rounds. `wall/FLOPs` is wall speed-up over FLOPs speed-up: below 1, the saving in arithmetic is "
                 "not all turned into time. `run spread`: half the range of a point's timed runs over their "
                 "median. `oracle` reads the true labels (reporting only). geep-verify's knob is written tau/t "
                 "(t: the fastbert threshold rows continue under).")
    if curves:
        lines += ["", f"![accuracy vs speed-up]({curves})"]
    for precision in h.get("precisions") or ["fp32"]:
        lines += calibration_lines(h, precision)
    summary = summary_rows(result, budget)
    if uses_reference(result):
        lines += reference_section(result)
    for (name, batch_size), records in group_records(result.records).items():
        objective = records[0]["objective"]
        lines += ["", f"## `{name}` ({objective}), batch size {batch_size}", ""]
        lines += _budget_table([row for row in summary if row["model"] == name and row["batch_size"] == batch_size],
                               budget)
        if len({precision_of(r) for r in records}) > 1:
            lines += _precision_tables(records)
            continue
        lines.append(f"| policy | knob | {_name(metric_of(records[0]))} | macro-F1 | mean layer | FLOPs speed-up | "
                     "wall speed-up | "
                     "samples/s | wall/FLOPs | run spread |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in records:
            if not r["timed"]:
                continue
            ratio = r["wall_speedup"] / r["flops_speedup"] if r["flops_speedup"] else None
            note = " (reads labels)" if r["reporting_only"] else ""
            lines.append(f"| {r['policy']}{note} | {knob_text(r)} | {_pct(score_of(r), metric_of(r), 2)} | "
                         f"{_fmt(None if r['macro_f1'] is None else 100 * r['macro_f1'], '.2f')} | "
                         f"{r['mean_exit_layer']:.2f} | {r['flops_speedup']:.2f}x | "
                         f"{_fmt(r['wall_speedup'], '.2f', 'x')} | {_fmt(r['samples_per_s'], '.0f')} | "
                         f"{_fmt(ratio, '.2f')} | {_spread(r.get('wall_runs'))} |")
        lines += ["", "Pareto frontiers, slowest to fastest, as knob (accuracy, speed-up):", ""]
        for policy, pts in by_policy(records).items():
            if len(pts) == 1:
                continue  # full, oracle: one point, in the table above
            wall = pareto_frontier([p for p in pts if p["timed"]], "wall_speedup", "score")
            flops = pareto_frontier(pts, "flops_speedup", "score")
            lines.append(f"- `{policy}` wall: " + ", ".join(
                f"{knob_text(p)} ({_pct(score_of(p), metric_of(p), 1)}, {p['wall_speedup']:.2f}x)" for p in wall))
            lines.append(_flops_frontier_line(pts))
    return "\n".join(lines) + "\n"


def _precision_tables(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """The table and frontiers of one (model, batch size) benched at several precisions: each timed point's
    accuracy against ``full`` at fp32 and its wall speed-up over ``full`` at fp32 and at its own precision."""
    full = reference_full(records)
    ref = precision_of(full)
    lines = [f"Every point against `full` at {ref} ({_name(metric_of(full))} {_pct(score_of(full), metric_of(full))}) "
             "and against `full` at its "
             "own precision (`full` at int8 is the user's alternative to early exit).", "",
             f"| precision | policy | knob | accuracy | vs full {ref} (points) | mean layer | FLOPs speed-up | "
             f"wall vs full {ref} | wall vs full (same precision) | samples/s | run spread |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in records:
        if not r["timed"]:
            continue
        note = " (reads labels)" if r["reporting_only"] else ""
        lines.append(f"| {precision_of(r)} | {r['policy']}{note} | {knob_text(r)} | "
                     f"{_pct(score_of(r), metric_of(r), 2)} | {100 * (score_of(r) - score_of(full)):+.2f} | "
                     f"{r['mean_exit_layer']:.2f} | {r['flops_speedup']:.2f}x | "
                     f"{_fmt(r.get('wall_speedup_fp32'), '.2f', 'x')} | {_fmt(r['wall_speedup'], '.2f', 'x')} | "
                     f"{_fmt(r['samples_per_s'], '.0f')} | {_spread(r.get('wall_runs'))} |")
    lines += ["", f"Pareto frontiers, slowest to fastest, as knob (accuracy, wall speed-up over `full` at {ref}):", ""]
    for policy, pts in by_policy(records).items():
        for precision in dict.fromkeys(precision_of(p) for p in pts):
            grid = [p for p in pts if precision_of(p) == precision]
            mine = [p for p in grid if p["timed"]]
            if len(grid) == 1 or not mine:
                continue  # full, oracle: one point, in the table above
            wall = pareto_frontier([dict(p, overall=overall_speedup(p)) for p in mine], "overall", "score")
            lines.append(f"- `{policy}` at {precision}: " + ", ".join(
                f"{knob_text(p)} ({_pct(score_of(p), metric_of(p), 1)}, {p['overall']:.2f}x)" for p in wall))
            lines.append(_flops_frontier_line(grid))
    return lines


def _flops_frontier_line(points: Sequence[Mapping[str, Any]]) -> str:
    """One policy's FLOPs frontier over its whole grid, slowest to fastest; timed points marked with *."""
    flops = pareto_frontier(points, "flops_speedup", "score")
    return f"  FLOPs ({len(flops)} of {len(points)} grid points; * timed): " + ", ".join(
        f"{knob_text(p)}{'*' if p['timed'] else ''} ({_pct(score_of(p), metric_of(p), 1)}, {p['flops_speedup']:.2f}x)"
        for p in flops)


def _budget_table(rows: list[dict[str, Any]], budget: float) -> list[str]:
    """The summary of one (model, batch size), its :func:`summary_rows`: each policy's fastest frontier point within
    the budget."""
    several = len({row["precision"] for row in rows}) > 1
    lines = [f"Fastest within {budget:g} point(s) of `full`{' at fp32' if several else ''}, read from each policy's "
             "FLOPs frontier (wall: the median of the interleaved runs, spread: half their range over the median):",
             "", f"| precision | policy | knob | {_name(metric_of(rows[0]['full'])) if rows else 'accuracy'} | "
             "FLOPs speed-up | wall speed-up | run spread |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        b = row["best"]
        if b is None:
            lines.append(f"| {row['precision']} | {row['policy']} | - | none that accurate | | | |")
            continue
        lines.append(f"| {row['precision']} | {row['policy']} | {knob_text(b)} | "
                     f"{_pct(score_of(b), metric_of(b), 2)} | "
                     f"{b['flops_speedup']:.2f}x | {_fmt(overall_speedup(b), '.2f', 'x')} | "
                     f"{_spread(b.get('wall_runs'))} |")
    return lines + [""]


# ----------------------------------------------------------------------------------- against the reference
TARGETS = (2.0, 3.0, 4.0)  # the FLOPs speed-ups over the reference's full the report reads each line at


def reference_precision(result: BenchResult) -> str:
    precisions = result.header.get("precisions") or ["fp32"]
    return "fp32" if "fp32" in precisions else precisions[0]


def candidate_lines(result: BenchResult, batch_size: int) -> dict[str, list[Mapping[str, Any]]]:
    """Each line a user could pick at one batch size and the reference precision, on the reference's axes: every
    dynamic policy of every multi-exit model and cascade (``model: policy``), and the static baseline (the static
    models' ``full`` points). Reporting-only policies (oracle) and each model's own ``full`` are not lines."""
    precision = reference_precision(result)
    kinds = {name: info.get("kind") for name, info in result.header["models"].items()}
    records = [r for r in result.records if r["batch_size"] == batch_size and precision_of(r) == precision]
    lines: dict[str, list[Mapping[str, Any]]] = {}
    for r in records:
        if kinds.get(r["model"]) == "static" or r["policy"] == "full" or r["reporting_only"]:
            continue
        lines.setdefault(f"{r['model']}: {r['policy']}", []).append(r)
    static = [m for m, kind in kinds.items() if kind == "static"]
    line = static_line(records, static, batch_size, "flops_speedup_ref")
    if line:
        lines["static baseline"] = line
    return lines


def best_at(points: Sequence[Mapping[str, Any]], target: float) -> Mapping[str, Any] | None:
    """The most accurate point (ties: the faster by wall, then FLOPs) with a FLOPs speed-up over the reference of
    at least ``target``, among the timed points when any reaches it (so a wall speed-up stands beside it), else
    among every grid point (no wall speed-up); None when no point is that fast."""
    fast = [p for p in points if p["flops_speedup_ref"] >= target - 1e-9]
    timed = [p for p in fast if p["timed"] and p.get("wall_speedup_ref") is not None]
    pool = timed or fast
    if not pool:
        return None
    return max(pool, key=lambda p: (p["accuracy"], p.get("wall_speedup_ref") or 0.0, p["flops_speedup_ref"]))


def oracle_record(result: BenchResult, batch_size: int) -> Mapping[str, Any] | None:
    """The reference model's oracle point at ``batch_size`` and the reference precision, if it was benched."""
    ref, precision = result.header["reference"], reference_precision(result)
    return next((r for r in result.records if r["model"] == ref and r["batch_size"] == batch_size
                 and r["policy"] == "oracle" and precision_of(r) == precision), None)


def target_table(result: BenchResult, batch_size: int, targets: Sequence[float] = TARGETS) -> list[dict[str, Any]]:
    """Per line (:func:`candidate_lines`) and target: its :func:`best_at` point, its gap to the reference's
    oracle in points, and whether it is the most accurate line at that target (``winner``)."""
    oracle = oracle_record(result, batch_size)
    rows = [{"line": name, "points": {t: best_at(points, t) for t in targets}}
            for name, points in candidate_lines(result, batch_size).items()]
    for t in targets:
        reached = [row["points"][t] for row in rows if row["points"][t] is not None]
        top = max(reached, key=lambda p: (p["accuracy"], p.get("wall_speedup_ref") or 0.0), default=None)
        for row in rows:
            row.setdefault("winner", {})[t] = top is not None and row["points"][t] is top
            point = row["points"][t]
            row.setdefault("gap", {})[t] = None if point is None or oracle is None else \
                100 * (point["accuracy"] - oracle["accuracy"])
    return rows


def reference_section(result: BenchResult) -> list[str]:
    """``report.md``'s comparison on the reference's axes: the static baselines, which line wins at 2x, 3x and 4x
    FLOPs speed-up (with its wall speed-up and its distance from the oracle), and the Difficulty Inversion Score."""
    h = result.header
    ref = h["reference"]
    precision = reference_precision(result)
    lines = ["", f"## Against `{ref}`: static baselines, cascades and every dynamic policy", "",
             f"Speed-ups here are over `{ref}`'s `full` at {precision}, its wall runs timed in the same rounds as each "
             "model's own points; static baselines are models cut to k layers and fine-tuned whole "
             "(`geep train --num-layers`), cascades run their members in sequence (`geep cascade`)."]
    for batch_size in h["batch_sizes"]:
        precision_records = [r for r in result.records if r["batch_size"] == batch_size
                             and precision_of(r) == precision]
        lines += ["", f"### batch size {batch_size}", "",
                  "| model | kind | layers | full accuracy | FLOPs speed-up | wall speed-up |",
                  "|---|---|---:|---:|---:|---:|"]
        for name, info in h["models"].items():
            full = next((r for r in precision_records if r["model"] == name and r["policy"] == "full"), None)
            if full is None:
                continue
            layers = info["num_layers"] if info.get("kind") != "cascade" else " + ".join(
                str(m["layers"]) for m in info.get("members") or [])
            kind = info.get("kind") or "?"
            if kind == "cascade":
                kind += " (full: its last member alone)"
            lines.append(f"| `{name}` | {kind} | {layers} | {100 * full['accuracy']:.2f}% | "
                         f"{full['flops_speedup_ref']:.2f}x | {_fmt(full.get('wall_speedup_ref'), '.2f', 'x')} |")
        oracle = oracle_record(result, batch_size)
        rows = target_table(result, batch_size)
        lines += ["", "Each line's most accurate point at or above each FLOPs speed-up (a timed point where one "
                  "reaches it): accuracy, wall speed-up, points from the oracle"
                  + (f" (`{ref}`'s oracle: {100 * oracle['accuracy']:.2f}%, {oracle['flops_speedup_ref']:.2f}x FLOPs)"
                     if oracle else "") + "; the most accurate line at each speed-up in bold.", "",
                  "| line | " + " | ".join(f">= {t:g}x FLOPs" for t in TARGETS) + " |",
                  "|---|" + "---:|" * len(TARGETS)]
        for row in rows:
            cells = []
            for t in TARGETS:
                p = row["points"][t]
                if p is None:
                    cells.append("-")
                    continue
                gap = row["gap"][t]
                text = (f"{100 * p['accuracy']:.2f}% · {_fmt(p.get('wall_speedup_ref'), '.2f', 'x')} wall"
                        + ("" if gap is None else f" · {gap:+.2f}"))
                cells.append(f"**{text}**" if row["winner"][t] else text)
            lines.append(f"| {row['line']} | " + " | ".join(cells) + " |")
    dis = [(name, policy, scores) for name, info in h["models"].items()
           for policy, scores in (info.get("difficulty_inversion") or {}).get(precision, {}).items()]
    if dis:
        lines += ["", "Difficulty Inversion Score (CascadeBERT): how well each policy's confidence ranks the rows "
                  "its exit answers wrongly below those it answers right, at each exit where it decides (1: every "
                  "right row more confident than every wrong one; 0.5: no better than chance; - : no wrong row).",
                  "", "| model | policy | DIS by exit |", "|---|---|---|"]
        for name, policy, scores in dis:
            text = ", ".join(f"{k}: {'-' if v is None else f'{v:.3f}'}" for k, v in scores.items())
            lines.append(f"| `{name}` | {policy} | {text} |")
    return lines


def calibration_lines(header: Mapping[str, Any], precision: str) -> list[str]:
    """Each model's per-exit expected calibration error on the bench rows at ``precision``, raw and calibrated (the
    temperatures ``geep calibrate`` stored: ``confidence`` reads them)."""
    rows = [(name, info["calibration_error"][precision]) for name, info in header["models"].items()
            if (info.get("calibration_error") or {}).get(precision)]
    if not rows:
        return []
    lines = ["", f"Expected calibration error by exit at {precision} on these rows (15 equal-width bins), of the raw "
             "softmax -> of softmax(z / T) with the temperatures `geep calibrate` fitted on dev (`confidence` reads "
             "them; - : none fitted):", "", "| model | exit | T | ECE raw | ECE calibrated |", "|---|---:|---:|---:|---:|"]
    for name, ece in rows:
        temperatures, after = ece.get("temperatures"), ece.get("after")
        for i, k in enumerate(ece["exits"]):
            lines.append(f"| `{name}` | {k} | {'-' if temperatures is None else f'{temperatures[i]:.3f}'} | "
                         f"{100 * ece['before'][i]:.2f}% | {'-' if after is None else f'{100 * after[i]:.2f}%'} |")
    return lines
