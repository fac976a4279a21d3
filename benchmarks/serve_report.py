"""The report of `benchmarks/serve_load.py`: serve_load.md (every point, capacities, issue 11's targets met or not,
or issue 23's at int8) and serve_load_p95.png (p95 latency against offered load, one line per configuration)."""

from __future__ import annotations

from pathlib import Path

NAMES = {"a": "(a) full, dynamic batcher", "b": "(b) fastbert, --batching shrink", "c": "(c) fastbert, --batching layer",
         "d": "(d) geep-verify, --batching layer"}


def _ms(x: float | None) -> str:
    if x is None:
        return "-"
    return "inf" if x == float("inf") else f"{1000 * x:.0f}"


def _point_row(p: dict) -> str:
    batches = ", ".join(f"{k}: {v:.1f}" for k, v in p["mean_batch_by_layer"].items()) or "-"
    exits = "; ".join(f"{k}: {e['n']} @ {_ms(e['p50'])}/{_ms(e['p95'])}" for k, e in p["by_exit"].items()) or "-"
    cpu = "-" if p["client_cpu_share"] is None else f"{p['client_cpu_share']:.0%}"
    return (f"| {p['mode']} | {p['offered']:g} | {p['throughput']:.1f} | {_ms(p['p50'])} | {_ms(p['p95'])} | "
            f"{_ms(p['p99'])} | {p['ok']}/{p['sent']} | {p['rejected_503']} | {p['errors']} | {cpu} | {batches} | "
            f"{exits} |")


def exact(record: dict, config: str) -> bool:
    """Whether a capacity is a measurement (a higher ladder rate went over the bound), not only a lower bound."""
    return isinstance(record.get("first_over", {}).get(config), (int, float))


def _ratio(record: dict, x: str, y: str, target: float) -> str:
    cap = record["capacity"]
    ratio = cap[x] / cap[y]
    if exact(record, x) and exact(record, y):
        verdict = "met" if ratio >= target else "NOT met"
    elif not exact(record, x) and exact(record, y) and ratio >= target:
        verdict = "met (({x}) only a lower bound)".format(x=x)
    else:
        verdict = "undetermined: the ladder did not bound " + " and ".join(f"({c})" for c in (x, y)
                                                                          if not exact(record, c))
    return f"{ratio:.2f}x ({y})'s {cap[y]:g}/s (target >= {target:g}x): {verdict}"


def targets(record: dict) -> list[str]:
    """Issue 11's targets (issue 23's at int8: capacity >= 3x a full int8 dynamic batcher), each met, not met, or
    undetermined, with its figures."""
    cap = record.get("capacity", {})
    vs_a = 3.0 if record["args"].get("precision") == "int8" else 2.5
    lines = []
    for x in ("c", "d"):
        if x not in cap or not cap.get("a"):
            lines.append(f"- capacity of ({x}) vs (a): not measured")
            continue
        line = f"- ({x}) capacity {cap[x]:g}/s = " + _ratio(record, x, "a", vs_a)
        if cap.get("b"):
            line += "; " + _ratio(record, x, "b", 1.2)
        lines.append(line)
    half = {p["config"]: p for p in record["points"] if p["mode"] == "half"}
    if "a" in half and not exact(record, "a"):
        lines.append("- (the half-capacity point is half of the ladder's top rate: (a)'s capacity is only a lower "
                     "bound on this ladder)")
    if "a" in half:
        base = half["a"]["p50"]
        for x in ("c", "d"):
            if x not in half or "1" not in half[x]["by_exit"]:
                lines.append(f"- ({x}) at half of (a)'s capacity: no request exited at layer 1 (not met)")
                continue
            p50 = half[x]["by_exit"]["1"]["p50"]
            share = p50 / base if base else float("inf")
            lines.append(f"- ({x}) at {half[x]['offered']:g}/s (half of (a)'s capacity): p50 of requests exiting at "
                         f"layer 1 = {_ms(p50)} ms = {share:.0%} of (a)'s p50 {_ms(base)} ms (target <= 35%): "
                         f"{'met' if share <= 0.35 else 'NOT met'}")
    else:
        lines.append("- half-capacity comparison: not measured ((a) has no capacity on this ladder)")
    return lines


def write_report(record: dict, out: Path) -> None:
    env = record.get("environment", {})
    args = record["args"]
    precision = args.get("precision", "fp32")
    resolutions = [p["resolution"] for p in record["points"] if p.get("resolution") is not None]
    points = (f"open-loop points: {args['point_s']:g} s of arrivals, at least {args['requests']} requests (a point "
              f"shows an overload of e >= bound / (0.95 x its length): here e >= {100 * min(resolutions):.0f}%"
              f"-{100 * max(resolutions):.0f}%); closed-loop points: {args['requests']} requests"
              if "point_s" in args and resolutions else f"{args['requests']} requests per point at most")
    lines = [
        f"# `geep serve` under load (issue 11{'; issue 23: int8' if precision == 'int8' else ''})", "",
        f"git {env.get('git_commit')} (dirty: {env.get('git_dirty')}), {env.get('versions')}, {env.get('platform')}",
        f"model {args['model']}; data {args['data'] or ['bbc:test', 'tweets:test']}, one text per request; "
        f"--precision {precision}; max batch {args['max_batch']}, max wait {args['max_wait_ms']} ms; server "
        f"--threads 1 on CPUs {args['server_cpus']}, client on CPUs {args['client_cpus']}; {points}, "
        f"{args['max_point_s']:g} s of sending at most; {record['elapsed_s'] / 60:.1f} minutes in all.", "",
        f"(a)'s latency for one full batch T = {_ms(record.get('full_batch_latency_s'))} ms; latency bound 4T = "
        f"{_ms(record.get('bound_s'))} ms. Open-loop rates (requests/s): {record.get('rates')}.",
        "Latency is measured from each request's scheduled send time; rejected or failed requests count as never "
        "answered (inf). A ladder stops after the first rate over the bound, and goes on past its last rate until "
        "one is over.", "",
        "## Capacity (the highest ladder rate up to which p95 < 4T)", "",
        "| configuration | capacity (requests/s) | first rate over the bound | server exit status |",
        "|---|---|---|---|",
    ]
    for config, name in NAMES.items():
        if config in record["configs"]:
            over = record.get("first_over", {}).get(config)
            capacity = record.get("capacity", {}).get(config, "-")
            lines.append(f"| {name} | {capacity if exact(record, config) else f'>= {capacity} (a lower bound)'} | "
                         f"{'none on the ladder' if over is None else over} | "
                         f"{record.get('exit_status', {}).get(config, '-')} |")
    lines += ["", "## Targets", "", *targets(record), "",
              "Capacity is resolved to the ladder's steps: a ratio of capacities is only as fine as the ladder.", ""]
    header = ("| mode | offered | throughput/s | p50 ms | p95 ms | p99 ms | ok/sent | 503 | errors | client CPU | "
              "mean batch by exit layer | by exit layer: n @ p50/p95 ms |")
    for config, name in NAMES.items():
        points = [p for p in record["points"] if p["config"] == config]
        if points:
            lines += [f"## {name}", "", header, "|" + "---|" * 12, *map(_point_row, points), ""]
    if record["skipped"]:
        lines += ["## Skipped (over the time budget)", "", *(f"- ({c}) {m} {v}" for c, m, v in record["skipped"]), ""]
    (out / "serve_load.md").write_text("\n".join(lines))
    plot(record, out / "serve_load_p95.png")


def plot(record: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for config, name in NAMES.items():
        ladder = sorted((p["offered"], p["p95"]) for p in record["points"]
                        if p["config"] == config and p["mode"] == "open" and p["p95"] != float("inf"))
        if ladder:
            line, = ax.plot([x for x, _ in ladder], [1000 * y for _, y in ladder], marker="o", label=name)
            half = [(p["offered"], p["p95"]) for p in record["points"]
                    if p["config"] == config and p["mode"] == "half" and p["p95"] != float("inf")]
            ax.plot([x for x, _ in half], [1000 * y for _, y in half], marker="x", linestyle="none",
                    color=line.get_color())
    if record.get("bound_s"):
        ax.axhline(1000 * record["bound_s"], color="grey", linestyle="--", label="4T: (a)'s full-batch latency x 4")
    ax.set_xlabel("offered load (requests/s, open-loop Poisson; x: the half-capacity point)")
    ax.set_ylabel("p95 latency (ms)")
    ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
