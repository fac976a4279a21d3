"""Issue 6's three targets, read off one `geep bench` run (bench.json), met or not met with their figures.

1. For every accuracy from full's minus 2 points up to the best both reach, ``geep`` or ``geep-verify`` (on the
   GEEP-trained model) has at least 1.2x the interpolated wall throughput of ``fastbert`` on the FastBERT-trained
   model. Checked on a grid of accuracies (every 0.1 point) with :func:`geep.bench.interpolated_throughput`.
2. GEEP's wall speed-up is at least 0.9x its FLOPs speed-up (every timed geep / geep-verify point); FastBERT's same
   ratio is printed beside it.
3. At no more than 1 point below ``full``, GEEP's best wall speed-up over ``full`` (target: 3x on bbc).

    python benchmarks/targets.py runs/bench-bbc/bench.json --batch-size 32
"""

from __future__ import annotations

import argparse
import json
import statistics

from geep.evaluation.metrics import interpolated_throughput


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("bench_json")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--speedup-target", type=float, default=3.0)
    p.add_argument("--precision", default="fp32", help="the precision whose records are read (default fp32)")
    args = p.parse_args()
    data = json.loads(open(args.bench_json).read())
    records = [r for r in data["records"] if r["batch_size"] == args.batch_size
               and r.get("precision", "fp32") == args.precision]
    by_objective = {}
    for r in records:
        by_objective.setdefault(r["objective"], set()).add(r["model"])
    geep_model = sorted(by_objective["geep"])[0]
    fast_model = sorted(by_objective["fastbert"])[0]

    def rows(model, policy):
        return [r for r in records if r["model"] == model and r["policy"] == policy]

    full = rows(geep_model, "full")[0]
    full_acc = full["accuracy"]
    lines = [f"bench: {args.bench_json}, batch {args.batch_size}, N={data['header']['n']}, "
             f"device {data['header']['device']}; full accuracy (GEEP-trained) {100 * full_acc:.2f}%, "
             f"FastBERT-trained full {100 * rows(fast_model, 'full')[0]['accuracy']:.2f}%", ""]

    # 1. throughput ratio over the accuracy range
    fast = rows(fast_model, "fastbert")
    ours = {pol: rows(geep_model, pol) for pol in ("geep", "geep-verify")}
    top = min(max(r["accuracy"] for r in fast if r["timed"]),
              max(r["accuracy"] for pol in ours.values() for r in pol if r["timed"]))
    grid, a = [], full_acc - 0.02
    while a <= top + 1e-12:
        grid.append(a)
        a += 0.001
    ratios = []
    for acc in grid:
        f = interpolated_throughput(fast, acc)
        g = max((t for t in (interpolated_throughput(ours[pol], acc) for pol in ours) if t is not None), default=None)
        if f and g:
            ratios.append((acc, g / f))
    if ratios:
        worst = min(ratios, key=lambda x: x[1])
        met = all(r >= 1.2 for _, r in ratios)
        lines.append(f"1. geep/geep-verify vs fastbert on the FastBERT-trained model, accuracy {100 * grid[0]:.1f}%"
                     f"..{100 * top:.1f}%: throughput ratio min {worst[1]:.2f}x (at {100 * worst[0]:.1f}%), "
                     f"median {statistics.median(r for _, r in ratios):.2f}x, max {max(r for _, r in ratios):.2f}x"
                     f" -> {'MET' if met else 'NOT MET'} (bar 1.2x)")
    else:
        lines.append("1. no accuracy in range reached by both: NOT MET")

    # 2. wall vs FLOPs speed-up
    def wall_over_flops(model, policies):
        return [(r["policy"], r["knob"], r["wall_speedup"] / r["flops_speedup"]) for r in records
                if r["model"] == model and r["policy"] in policies and r["timed"] and r["wall_speedup"]]

    g2 = wall_over_flops(geep_model, ("geep", "geep-verify"))
    f2 = wall_over_flops(fast_model, ("fastbert",))
    lines.append(f"2. wall/FLOPs speed-up, geep + geep-verify timed points: min {min(x[2] for x in g2):.2f}, "
                 f"median {statistics.median(x[2] for x in g2):.2f} -> "
                 f"{'MET' if min(x[2] for x in g2) >= 0.9 else 'NOT MET'} (bar 0.9); fastbert (FastBERT-trained): "
                 f"min {min(x[2] for x in f2):.2f}, median {statistics.median(x[2] for x in f2):.2f}")

    # 3. best wall speed-up within 1 point of full
    ok = [r for pol in ours.values() for r in pol if r["timed"] and r["accuracy"] >= full_acc - 0.01]
    best = max(ok, key=lambda r: r["wall_speedup"], default=None)
    fast_ok = [r for r in fast if r["timed"] and r["accuracy"] >= full_acc - 0.01]
    fast_best = max(fast_ok, key=lambda r: r["wall_speedup"], default=None)
    if best:
        lines.append(f"3. within 1 point of full: GEEP's best wall speed-up {best['wall_speedup']:.2f}x "
                     f"({best['policy']} knob {best['knob']:.3g}, accuracy {100 * best['accuracy']:.2f}%, "
                     f"FLOPs {best['flops_speedup']:.2f}x) -> "
                     f"{'MET' if best['wall_speedup'] >= args.speedup_target else 'NOT MET'} "
                     f"(bar {args.speedup_target:g}x); fastbert on the FastBERT-trained model: "
                     + (f"{fast_best['wall_speedup']:.2f}x" if fast_best else "none within 1 point"))
    else:
        lines.append("3. no timed GEEP point within 1 point of full: NOT MET")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
