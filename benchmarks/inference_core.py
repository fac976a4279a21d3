"""Issue 10's speed check: every policy's wall time on this commit against an earlier commit, interleaved.

Two worker processes, one per checkout (`--old-src`: the `src` directory of the earlier commit, e.g. a `git worktree`
of it; the current one is this repository's), each load the model and the data once and then time what the driver
asks, one run at a time, so the two never compete for the CPU. Both are pinned to the same core(s) (the first
`--threads` of them): two processes left to float settle on different cores, and on a shared machine one core can be
busier than the other for the whole run, which once showed as a steady 6% "difference" between identical code. Each round times every policy once in each worker,
alternating which worker goes first; the report gives each policy's median over the rounds, the ratio new/old and
the spread of the runs. Also timed: the calibration sweep (every knob of every policy from one all-exits pass).

Then, on the current code only, a profile of `full`: the time spent in the scheduler (add, schedule, update) and in
everything that is not the model (scheduler, executor, outputs) as a share of the run.

    python benchmarks/inference_core.py --model runs/demo-smoke/geep --data bbc:test --old-src /tmp/geep-old/src \
        --rounds 7 --threads 1 --output benchmarks/results/inference_core.md
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
POLICIES = ["full", "fastbert", "deebert", "confidence", "pabee", "geep", "geep-verify"]
WHAT = POLICIES + ["sweep"]

WORKER = r'''
import json, os, sys, time
import torch
threads = int(sys.argv[3])
os.sched_setaffinity(0, set(range(threads)))  # both workers on the same core(s): no core is favoured
torch.set_num_threads(threads)
from geep.data import get_columns, load_dataset_spec
try:  # this commit's layout
    from geep.modeling import MultiExitClassifier
    from geep.inference import run_policy, label_ids
    from geep.evaluation import sweep
except ImportError:  # geep 0.1.0's layout
    from geep.model import MultiExitClassifier
    from geep.engine import run_policy, label_ids
    from geep.calibrate import sweep
model = MultiExitClassifier.from_pretrained(sys.argv[1])
cols = get_columns(load_dataset_spec(sys.argv[2]), model.config.text_column, None, model.config.label_column,
                   source=sys.argv[2], require_labels=True)
encoded = model.tokenize(cols.texts)
labels = label_ids(model, cols.labels)
batch_size = int(sys.argv[4])
POLICIES = ["fastbert", "deebert", "confidence", "pabee", "geep", "geep-verify"]
with torch.inference_mode():
    for policy in ["full"] + POLICIES:
        run_policy(model, encoded, policy, None, batch_size=batch_size)  # warm-up
print("ready", flush=True)
for line in sys.stdin:
    what = line.strip()
    start = time.perf_counter()
    with torch.inference_mode():
        if what == "sweep":
            sweep(model, encoded, labels, policies=POLICIES, batch_size=batch_size, grid_points=21)
        else:
            run_policy(model, encoded, what, None, batch_size=batch_size)
    print(json.dumps(time.perf_counter() - start), flush=True)
'''


class Worker:
    def __init__(self, src: str, model: str, data: str, threads: int, batch_size: int) -> None:
        env = {**os.environ, "PYTHONPATH": src, "TOKENIZERS_PARALLELISM": "false"}
        self.proc = subprocess.Popen([sys.executable, "-c", WORKER, model, data, str(threads), str(batch_size)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"worker for {src} did not start: {line!r}")

    def time(self, what: str) -> float:
        self.proc.stdin.write(what + "\n")
        self.proc.stdin.flush()
        return float(json.loads(self.proc.stdout.readline()))

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def profile_full(model_dir: str, data: str, threads: int, batch_size: int) -> dict:
    """Shares of a `full` run (current code): scheduler calls, and everything outside the backend's model calls."""
    import cProfile
    import pstats

    import torch

    sys.path.insert(0, str(ROOT / "src"))
    from geep.data import get_columns, load_dataset_spec
    from geep.inference import run_policy
    from geep.modeling import MultiExitClassifier

    os.sched_setaffinity(0, set(range(threads)))
    torch.set_num_threads(threads)
    model = MultiExitClassifier.from_pretrained(model_dir)
    cols = get_columns(load_dataset_spec(data), model.config.text_column, None, None, source=data,
                       require_labels=False)
    encoded = model.tokenize(cols.texts)
    run_policy(model, encoded, "full", batch_size=batch_size)
    profiler = cProfile.Profile()
    profiler.enable()
    run_policy(model, encoded, "full", batch_size=batch_size)
    profiler.disable()
    stats = pstats.Stats(profiler).stats  # (file, line, name) -> (cc, nc, tt, ct, callers)
    total = max(ct for (f, _, name), (_, _, _, ct, _) in stats.items() if name == "run_policy")

    def cumulative(path_part: str, names: set[str]) -> float:
        return sum(ct for (f, _, name), (_, _, _, ct, _) in stats.items() if path_part in f and name in names)

    scheduler = cumulative("geep/scheduling", {"add", "schedule", "update"})
    backend = cumulative("geep/runtime/torch_backend.py", {"embed", "run_layers", "read_head", "select", "gather"})
    return {"total_s": total, "scheduler_s": scheduler, "backend_s": backend,
            "scheduler_share": scheduler / total, "outside_model_share": (total - backend) / total}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--data", default="bbc:test")
    p.add_argument("--old-src", required=True, help="the src directory of the earlier commit's checkout")
    p.add_argument("--new-src", default=str(ROOT / "src"), help="default: this checkout's src (an A/A check: both "
                   "the same)")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--output", default=None, help="write the markdown report here too")
    args = p.parse_args()

    workers = {"old": Worker(args.old_src, args.model, args.data, args.threads, args.batch_size),
               "new": Worker(args.new_src, args.model, args.data, args.threads, args.batch_size)}
    times: dict[tuple[str, str], list[float]] = {}
    started = time.time()
    try:
        for r in range(args.rounds):
            order = ["old", "new"] if r % 2 == 0 else ["new", "old"]
            for what in POLICIES + ["sweep"]:
                for name in order:
                    times.setdefault((what, name), []).append(workers[name].time(what))
            print(f"round {r + 1}/{args.rounds} done ({time.time() - started:.0f} s)", file=sys.stderr)
    finally:
        for w in workers.values():
            w.close()
    prof = profile_full(args.model, args.data, args.threads, args.batch_size)

    lines = [f"# Inference core vs the previous commit ({args.data}, batch {args.batch_size}, "
             f"{args.threads} thread(s), {args.rounds} interleaved rounds)", "",
             "| run | old median (s) | new median (s) | new / old | old spread | new spread |",
             "|---|---:|---:|---:|---:|---:|"]
    for what in POLICIES + ["sweep"]:
        old, new = times[(what, "old")], times[(what, "new")]
        spread = [f"±{50 * (max(t) - min(t)) / statistics.median(t):.1f}%" for t in (old, new)]
        lines.append(f"| {what} | {statistics.median(old):.3f} | {statistics.median(new):.3f} | "
                     f"{statistics.median(new) / statistics.median(old):.3f} | {spread[0]} | {spread[1]} |")
    lines += ["", f"`full`, profiled (cProfile, current code): run {prof['total_s']:.3f} s; scheduler (add, schedule, "
              f"update) {prof['scheduler_s'] * 1000:.1f} ms = {100 * prof['scheduler_share']:.2f}%; everything "
              f"outside the backend's model calls {100 * prof['outside_model_share']:.2f}% (profiler overhead "
              "included)."]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.output:
        Path(args.output).write_text(report)


if __name__ == "__main__":
    main()
