"""Issue 12's targets, read off one `geep bench --precision fp32,int8` run (bench.json), met or not met with figures.

1. ``full`` at int8 runs at least 2.5x the wall throughput of ``full`` at fp32, at most 0.5 point less accurate.
2. The fastest timed point of any policy at any precision within 1 point of ``full`` at fp32 runs at least
   ``--vs-int8`` (2 on bbc, 1.5 on tweets) times the throughput of ``full`` at int8.

Every ratio comes from the same timing rounds (the bench interleaves both precisions).

    python benchmarks/precision_targets.py runs/bench-bbc-int8/bench.json --batch-size 32 --vs-int8 2
"""

from __future__ import annotations

import argparse
import json


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("bench_json")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--model", default=None, help="the model to read (default: the first GEEP-trained one)")
    p.add_argument("--vs-int8", type=float, default=2.0, help="target 2's ratio over full int8 (default 2)")
    args = p.parse_args()
    data = json.loads(open(args.bench_json).read())
    records = [r for r in data["records"] if r["batch_size"] == args.batch_size]
    model = args.model or next((r["model"] for r in records if r["objective"] == "geep"), records[0]["model"])
    records = [r for r in records if r["model"] == model]
    full = {r["precision"]: r for r in records if r["policy"] == "full"}
    if "fp32" not in full or "int8" not in full:
        raise SystemExit("error: the bench needs both fp32 and int8 (`geep bench --precision fp32,int8`)")
    f32, f8 = full["fp32"], full["int8"]
    lines = [f"bench: {args.bench_json}, model {model}, batch {args.batch_size}, N={data['header']['n']}, device "
             f"{data['header']['device']}; full fp32 {100 * f32['accuracy']:.2f}% at {f32['samples_per_s']:.1f} "
             f"rows/s, full int8 {100 * f8['accuracy']:.2f}% at {f8['samples_per_s']:.1f} rows/s", ""]
    speed, drop = f8["wall_speedup_fp32"], 100 * (f32["accuracy"] - f8["accuracy"])
    ok = speed >= 2.5 and drop <= 0.5
    lines.append(f"1. full int8 vs full fp32: {speed:.2f}x at {drop:+.2f} points drop (target >= 2.5x at <= 0.5): "
                 f"{'met' if ok else 'NOT MET'}")
    floor = f32["accuracy"] - 0.01 - 1e-12
    timed = [r for r in records if r["timed"] and r["policy"] not in ("full", "oracle") and r["accuracy"] >= floor]
    if not timed:
        lines.append("2. no timed policy point within 1 point of full fp32: NOT MET")
    else:
        best = max(timed, key=lambda r: (r["wall_speedup_fp32"], r["accuracy"]))
        ratio = best["samples_per_s"] / f8["samples_per_s"]
        lines.append(f"2. best within 1 point of full fp32: {best['policy']} at {best['precision']} (knob "
                     f"{best['knob']}), {100 * best['accuracy']:.2f}%, {best['wall_speedup_fp32']:.2f}x full fp32 = "
                     f"{ratio:.2f}x full int8 (target >= {args.vs_int8:g}x): "
                     f"{'met' if ratio >= args.vs_int8 else 'NOT MET'}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
