"""Issue 15's targets, read off one `geep bench` run (bench.json) on ONE model, met or not met with their figures.

1. At every accuracy from ``full``'s minus ``--range`` points (2) up, ``geep-verify``'s FLOPs speed-up is at least
   ``fastbert``'s on the same model; and its wall speed-up is too, within the runs' spread. A policy's speed-up "at
   accuracy a" is its fastest point with accuracy >= a (a step function: what a knob can actually deliver; no
   interpolation between knobs): over every grid point for FLOPs, over the timed points for wall. Checked at every
   accuracy one of the two reaches in the range (the step functions change only there). Wall: met where the ratio
   is at least 1 minus the larger spread (half the range of the runs over their median) of the two points compared.
2. The table's own contribution: within ``--budget`` points (1) of ``full``, the fastest geep-verify point with
   tau > 0 against the fastest with tau = 0 (FastBERT's rule at t, pooled): FLOPs ratio >= ``--table-bar`` (1.05).

    python benchmarks/verify_targets.py runs/bench-tweets/bench.json --batch-size 32
"""

from __future__ import annotations

import argparse
import json
import statistics


def fastest_at(points: list[dict], accuracy: float, speed: str) -> dict | None:
    """The point with the highest ``speed`` among those with accuracy >= ``accuracy`` (ties: the more accurate)."""
    ok = [p for p in points if p["accuracy"] >= accuracy - 1e-12 and p.get(speed) is not None]
    return max(ok, key=lambda p: (p[speed], p["accuracy"])) if ok else None


def spread(point: dict) -> float:
    """Half the range of a point's timed runs over their median (0 for a point without runs)."""
    runs = point.get("wall_runs") or []
    return (max(runs) - min(runs)) / 2 / statistics.median(runs) if runs else 0.0


def knob(point: dict) -> str:
    t = point.get("continue_threshold")
    k = "-" if point["knob"] is None else f"{point['knob']:.3g}"
    return k if t is None else f"(tau {k}, t {t:.3g})"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("bench_json")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--precision", default="fp32", help="the precision whose records are read (default fp32)")
    p.add_argument("--model", default=None, help="the model to read (default: the first GEEP-trained one)")
    p.add_argument("--range", type=float, default=2.0, help="target 1's accuracy range below full, points")
    p.add_argument("--budget", type=float, default=1.0, help="target 2's accuracy budget below full, points")
    p.add_argument("--table-bar", type=float, default=1.05, help="target 2's FLOPs ratio (default 1.05)")
    args = p.parse_args()
    data = json.loads(open(args.bench_json).read())
    records = [r for r in data["records"] if r["batch_size"] == args.batch_size
               and (r.get("precision") or "fp32") == args.precision]
    if not records:
        raise SystemExit(f"error: no records at batch size {args.batch_size}, precision {args.precision}")
    model = args.model or next((r["model"] for r in records if r["objective"] == "geep"), records[0]["model"])
    records = [r for r in records if r["model"] == model]
    by = {name: [r for r in records if r["policy"] == name] for name in ("full", "fastbert", "geep-verify")}
    if not all(by.values()):
        raise SystemExit(f"error: {model} needs full, fastbert and geep-verify records")
    full = by["full"][0]["accuracy"]
    verify, fast = by["geep-verify"], by["fastbert"]
    if not all("continue_threshold" in r for r in verify):
        raise SystemExit("error: this bench.json predates geep-verify's (tau, t) knob (no continue_threshold)")
    lines = [f"bench: {args.bench_json}, model {model}, batch {args.batch_size}, {args.precision}, "
             f"N={data['header']['n']}, device {data['header']['device']}, {data['header']['repeats']} repeats; "
             f"full {100 * full:.2f}%; geep-verify grid {len(verify)} points, fastbert {len(fast)}", ""]

    # 1. FLOPs and wall over the accuracy range
    floor = full - args.range / 100.0
    levels = sorted({r["accuracy"] for r in verify + fast if r["accuracy"] >= floor - 1e-12})
    flops = []
    for a in levels:
        v, f = fastest_at(verify, a, "flops_speedup"), fastest_at(fast, a, "flops_speedup")
        if f is not None:
            flops.append((a, 0.0 if v is None else v["flops_speedup"] / f["flops_speedup"], v, f))
    if flops:
        worst = min(flops, key=lambda x: x[1])
        met = all(ratio >= 1.0 - 1e-9 for _, ratio, _, _ in flops)
        lines.append(f"1a. FLOPs, geep-verify / fastbert at every accuracy from {100 * floor:.2f}% ({len(flops)} "
                     f"levels): min {worst[1]:.3f} at {100 * worst[0]:.2f}% (fastbert {knob(worst[3])} "
                     f"{worst[3]['flops_speedup']:.2f}x, geep-verify "
                     + (f"{knob(worst[2])} {worst[2]['flops_speedup']:.2f}x" if worst[2] else "none") + "), "
                     f"median {statistics.median(x[1] for x in flops):.3f} -> {'MET' if met else 'NOT MET'} (bar 1)")
    else:
        lines.append(f"1a. fastbert reaches no accuracy from {100 * floor:.2f}%: nothing to compare")
    timed_v, timed_f = [r for r in verify if r["timed"]], [r for r in fast if r["timed"]]
    walls = []
    for a in sorted({r["accuracy"] for r in timed_v + timed_f if r["accuracy"] >= floor - 1e-12}):
        v, f = fastest_at(timed_v, a, "wall_speedup"), fastest_at(timed_f, a, "wall_speedup")
        if v is not None and f is not None:
            walls.append((a, v["wall_speedup"] / f["wall_speedup"], max(spread(v), spread(f)), v, f))
    if walls:
        worst = min(walls, key=lambda x: x[1] - (1.0 - x[2]))
        met = all(ratio >= 1.0 - s for _, ratio, s, _, _ in walls)
        lines.append(f"1b. wall, geep-verify / fastbert over the timed points ({len(walls)} levels both reach): "
                     f"worst {worst[1]:.3f} at {100 * worst[0]:.2f}% against a spread of ±{100 * worst[2]:.0f}% "
                     f"(geep-verify {knob(worst[3])} {worst[3]['wall_speedup']:.2f}x, fastbert {knob(worst[4])} "
                     f"{worst[4]['wall_speedup']:.2f}x), median {statistics.median(x[1] for x in walls):.3f} -> "
                     f"{'MET' if met else 'NOT MET'} (bar: 1 minus the spread)")
    else:
        lines.append("1b. no accuracy in range is reached by timed points of both: not checked")

    # 2. the table's own contribution at the budget
    floor = full - args.budget / 100.0
    table = fastest_at([r for r in verify if r["knob"] > 0], floor, "flops_speedup")
    rule = fastest_at([r for r in verify if r["knob"] == 0], floor, "flops_speedup")
    if table is None or rule is None:
        lines.append(f"2. within {args.budget:g} point(s): " + ("no tau > 0 point" if table is None else
                                                                  "no tau = 0 point") + " that accurate: NOT MET")
    else:
        ratio = table["flops_speedup"] / rule["flops_speedup"]

        def show(r: dict) -> str:
            wall = "" if r["wall_speedup"] is None else f", wall {r['wall_speedup']:.2f}x ±{100 * spread(r):.0f}%"
            return f"{knob(r)} {100 * r['accuracy']:.2f}% {r['flops_speedup']:.2f}x FLOPs{wall}"
        lines.append(f"2. within {args.budget:g} point(s): best tau > 0 {show(table)}; best tau = 0 {show(rule)}: "
                     f"FLOPs ratio {ratio:.3f} -> {'MET' if ratio >= args.table_bar else 'NOT MET'} "
                     f"(bar {args.table_bar:g})")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
