"""``curves.png``: accuracy against wall-clock and FLOPs speed-up, a line per (model, policy)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from geep.bench.result import BenchResult, by_policy
from geep.evaluation.metrics import metric_of, pareto_frontier, score_of
from geep.io import atomic_path

_POLICY_COLOURS = {"fastbert": "tab:blue", "deebert": "tab:orange", "confidence": "tab:green", "pabee": "tab:purple",
                   "geep": "tab:red", "geep-verify": "tab:brown", "oracle": "gold", "full": "black", "lte": "tab:pink",
                   "elbert": "tab:cyan", "vote": "tab:olive", "margin": "tab:gray"}
_POLICY_COLOURS["cascade"] = "darkcyan"  # a cascade's member policies keep their policy's colour (cascade-fastbert)
_LINESTYLES = ["-", "--", ":", "-."]
_FULL_MARKERS = ["o", "s", "D", "^"]
_PRECISION_MARKERS = {"fp32": "o", "int8": "s", "bf16": "^", "fp16": "D"}
_NICE_TICKS = [0.25, 0.5, 0.75, 1, 1.25, 1.5, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 48, 64]


def plot_curves(result: BenchResult, path: str | Path) -> None:
    """``curves.png``: a row per batch size, two panels -- accuracy vs wall speed-up (timed points) and accuracy
    vs FLOPs speed-up (each policy's frontier as a line, the rest of its grid as faint dots: geep-verify's grid of
    (tau, t) pairs is no curve) -- a line per (model, policy): colour = policy, line style = model.
    ``full`` is a black marker at (1, its accuracy); the oracle a star; log-scale x; one legend below.
    With several precisions each has its own marker and its lines are labelled with it, and the wall-clock panel
    puts every point against ``full`` at fp32 (``full`` at int8 is then a black square right of 1)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator

    records = [dict(r, precision=r.get("precision") or "fp32") for r in result.records]
    precisions = list(dict.fromkeys(r["precision"] for r in records))
    several = len(precisions) > 1
    wall_key = "wall_speedup_fp32" if several and "fp32" in precisions else "wall_speedup"
    flops_key = "flops_speedup"
    kinds = {name: info.get("kind") for name, info in result.header.get("models", {}).items()}
    if uses_reference(result):  # every model on the reference's axes; static models drawn as one line
        wall_key, flops_key = "wall_speedup_ref", "flops_speedup_ref"
    static = [m for m, kind in kinds.items() if kind == "static" and uses_reference(result)]
    records_all = records
    records = [r for r in records if r["model"] not in static]
    batch_sizes = sorted({r["batch_size"] for r in records})
    models = list(dict.fromkeys(r["model"] for r in records))
    objectives = {m: next(r["objective"] for r in records if r["model"] == m) for m in models}
    unique_objectives = len(set(objectives.values())) == len(models)

    def model_label(m: str) -> str:
        if len(models) == 1:
            return ""
        return f" [{objectives[m]}-trained]" if unique_objectives else f" [{m}]"

    fig, axes = plt.subplots(len(batch_sizes), 2, figsize=(13, 4.6 * len(batch_sizes)), squeeze=False,
                             layout="constrained")
    handles: dict[str, Any] = {}
    for row, batch_size in enumerate(batch_sizes):
        for col, (xkey, title) in enumerate(((wall_key, "wall-clock"), (flops_key, "FLOPs"))):
            ax = axes[row][col]
            xs_all = []
            for mi, m in enumerate(models):
                style = _LINESTYLES[mi % len(_LINESTYLES)]
                pts = [r for r in records if r["model"] == m and r["batch_size"] == batch_size
                       and r[xkey] is not None]
                for (policy, precision), group in _by_policy_and_precision(pts).items():
                    group = sorted(group, key=lambda r: r[xkey])
                    xs = [r[xkey] for r in group]
                    ys = [100 * score_of(r) for r in group]
                    xs_all += xs
                    label = f"{policy}{' ' + precision if several else ''}{model_label(m)}"
                    marker = _PRECISION_MARKERS.get(precision, "o") if several else "o"
                    if policy == "full":
                        full_marker = marker if several else _FULL_MARKERS[mi % len(_FULL_MARKERS)]
                        h = ax.scatter(xs, ys, marker=full_marker, s=70, c="black", zorder=5, label=label)
                    elif policy == "oracle":
                        h = ax.scatter(xs, ys, marker="*", s=260, c=_POLICY_COLOURS["oracle"], edgecolors="black",
                                       linewidths=0.8 if mi == 0 else 1.6, zorder=6, label=label + " (labels)")
                    else:
                        colour = _POLICY_COLOURS.get(policy, _POLICY_COLOURS.get(policy.removeprefix("cascade-")))
                        if col:  # FLOPs: the frontier as the line, the grid's other points as faint dots
                            line = pareto_frontier(group, xkey, "score")
                            rest = [r for r in group if all(r is not f for f in line)]
                            ax.scatter([r[xkey] for r in rest], [100 * score_of(r) for r in rest], s=6,
                                       color=colour, alpha=0.25, linewidths=0, zorder=1)
                            xs, ys = [r[xkey] for r in line], [100 * score_of(r) for r in line]
                        (h,) = ax.plot(xs, ys, linestyle=style, marker=marker, markersize=4 if col else 5,
                                       color=colour, label=label, alpha=0.9 if precision == precisions[0] else 0.6,
                                       markerfacecolor="none" if several and precision != precisions[0] else colour)
                    handles.setdefault(h.get_label(), h)
            line = static_line(records_all, static, batch_size, xkey)
            if line:
                xs, ys = [r[xkey] for r in line], [100 * r["accuracy"] for r in line]
                xs_all += xs
                (h,) = ax.plot(xs, ys, linestyle="--", marker="s", markersize=6, color="dimgrey", zorder=4,
                               label="static baseline (k layers, full)")
                for r, x, y in zip(line, xs, ys):
                    ax.annotate(f"{r['layers']}L", (x, y), textcoords="offset points", xytext=(4, -10), fontsize=8,
                                color="dimgrey")
                handles.setdefault(h.get_label(), h)
            ax.set_xscale("log")
            if xs_all:
                lo, hi = min(xs_all + [1.0]) / 1.08, max(xs_all + [1.0]) * 1.08
                ax.set_xlim(lo, hi)
                ticks = [t for t in _NICE_TICKS if lo <= t <= hi]
                ax.xaxis.set_major_locator(FixedLocator(ticks))
                ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}x"))
                ax.xaxis.set_minor_locator(NullLocator())
                ax.xaxis.set_minor_formatter(NullFormatter())
            ax.axvline(1.0, color="grey", linewidth=0.6, zorder=0)
            ax.grid(True, which="major", alpha=0.3)
            versus = "full fp32" if col == 0 and wall_key == "wall_speedup_fp32" else "full"
            if uses_reference(result):
                versus = f"{result.header['reference']}'s full"
            ax.set_xlabel(f"{title} speed-up vs {versus} (log scale)")
            metric = metric_of(records[0]) if records else "accuracy"
            ax.set_ylabel("accuracy (%)" if metric == "accuracy" else f"{metric.replace('_', '-')} (x 100)")
            what = "timed points" if col == 0 else "frontier of the grid"
            ax.set_title(f"batch {batch_size}: {metric.replace('_', '-')} vs {title} speed-up ({what})", fontsize=10)
    device = result.header.get("device", "")
    fig.suptitle(f"geep bench: {result.header.get('data')} (N = {result.header.get('n')}), {device}", fontsize=11)
    fig.legend(list(handles.values()), list(handles.keys()), loc="outside lower center",
               ncol=min(4, max(1, len(handles))), fontsize=9, frameon=False)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def _by_policy_and_precision(records: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for policy, group in by_policy(records).items():
        for r in group:
            out.setdefault((policy, r["precision"]), []).append(r)
    return out


def uses_reference(result: BenchResult) -> bool:
    """Whether the plot and the report put every model on the reference's axes: several models benched, each record
    with its speed-ups over the reference (results written before references existed have none)."""
    models = result.header.get("models", {})
    return len(models) > 1 and bool(result.header.get("reference")) and all(
        r.get("flops_speedup_ref") is not None for r in result.records)


def static_line(records: list[dict[str, Any]], static: list[str], batch_size: int, xkey: str) -> list[dict[str, Any]]:
    """The static baseline at one batch size: each static model's ``full`` record (the first precision benched),
    with its layer count, in order of ``xkey``; the records that have no ``xkey`` value are left out."""
    out = []
    for m in static:
        fulls = [r for r in records if r["model"] == m and r["batch_size"] == batch_size and r["policy"] == "full"
                 and r.get(xkey) is not None]
        if fulls:
            first = fulls[0]
            layers = max(int(k) for k in first["exit_histogram"])
            out.append(dict(first, layers=layers))
    return sorted(out, key=lambda r: r[xkey])
