"""Which pool should a `--batching layer` step run next? The rules compared on a virtual clock, without noise.

The shared CPU this project is developed on is too noisy to rank scheduling rules by wall-clock latency (other
jobs share the cores). So the rules are compared by running the server's real scheduler and executor
(``Scheduler`` + ``LayerPools``/``Shrinking`` + ``Executor``) over recorded logits (``ReplayBackend``: each row's real
exits under the policy) with Poisson arrivals on a virtual clock, which a step advances by its measured cost:
``(layers run) x (a + FLOPs / R)`` plus the head the same way, where ``a`` (the fixed cost of one layer call) and
``R`` (FLOP/s) are fitted from timing the real model's layers at two shapes. The loop mirrors the model worker's:
arrivals join the pools between steps, and an idle worker sleeps until the next arrival or the strategy's
``ready_at()``.

Reported per rule and load: p50/p95 latency, p50 of rows that exit at the first exit, throughput, and the capacity
(the highest load up to which p95 stays under 4x (a)'s full-batch latency, as issue 11 defines it). It ranks rules;
the HTTP benchmark (`benchmarks/serve_load.py`) measures the server itself.

    python benchmarks/serve_schedule_sim.py --model runs/demo/geep --output benchmarks/results/serve_schedule_sim.md
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_load import load_texts  # noqa: E402

from geep.inference import all_exit_logits  # noqa: E402
from geep.inference.executor import Executor  # noqa: E402
from geep.inference import predicted_layers, resolve_run  # noqa: E402
from geep.modeling.model import MultiExitClassifier  # noqa: E402
from geep.runtime import FlopsSpec, ReplayBackend, TorchBackend  # noqa: E402
from geep.scheduling import FILLS, POOL_ORDERS, LayerPools, Row, Scheduler, Shrinking  # noqa: E402


def fit_cost(model: MultiExitClassifier, encoded: dict, spec: FlopsSpec, repeats: int = 7) -> tuple[float, float]:
    """(a, R): one layer call costs a + FLOPs / R seconds, from the median time of layer 1 at two shapes."""
    backend = TorchBackend(model)
    ids = encoded["input_ids"]
    shapes = []
    for B, T in ((1, 16), (32, 128)):
        rows = [list(x[:T]) + [x[-1]] * (T - len(x[:T])) for x in ids[:B]]  # B rows of exactly T tokens
        state = backend.embed(list(range(B)), rows)
        times = []
        with torch.inference_mode():
            for _ in range(repeats):
                start = time.perf_counter()
                backend.run_layers(state, 1)
                times.append(time.perf_counter() - start)
        shapes.append((B * spec.layer(T), statistics.median(times)))
    (f1, t1), (f2, t2) = shapes
    R = (f2 - f1) / max(t2 - t1, 1e-9)
    return max(t1 - f1 / R, 0.0), R


class Cost:
    """Seconds a step takes on the virtual clock."""

    def __init__(self, spec: FlopsSpec, a: float, R: float) -> None:
        self.spec, self.a, self.R = spec, a, R

    def __call__(self, rows: int, T: int, start: int, end: int) -> float:
        layers = (end - start) * (self.a + rows * self.spec.layer(T) / self.R)
        return layers + self.a + rows * self.spec.head(end, T) / self.R


def simulate(backend, policy, knob, strategy, encoded, predicted, arrivals, cost, batch_size) -> list:
    """Each request's (latency, exit layer) when requests (one row each) arrive at ``arrivals``."""
    scheduler = Scheduler(backend.exit_layers, backend.num_layers, strategy, batch_size=batch_size,
                          reads_exits=policy.reads_exits)
    executor = Executor(scheduler, backend, policy, knob)
    n, now, i, done = len(arrivals), 0.0, 0, {}
    while len(done) < n:
        while i < n and arrivals[i] <= now:
            scheduler.add([Row(i, encoded["input_ids"][i], arrival=arrivals[i],
                               predicted=None if predicted is None else predicted[i], key=i)])
            i += 1
        step = scheduler.schedule(now)
        if step is None:  # the worker sleeps until the next arrival or until a pool is ready
            wake = scheduler.ready_at()
            now = min(arrivals[i] if i < n else math.inf, math.inf if wake is None else wake)
            continue
        finished = executor.run_step(step)
        now += cost(step.size, step.seq_len, step.start, step.end)
        for row in finished.rows:
            done[row.id] = (now - arrivals[row.id], finished.layer)
    return [done[j] for j in range(n)]


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--data", action="append", default=None)
    p.add_argument("--threshold", action="append", default=[], metavar="POLICY=KNOB")
    p.add_argument("--requests", type=int, default=3000)
    p.add_argument("--loads", default="0.25,0.5,1,1.5,2,2.5,3,4,5,6",
                   help="arrival rates as multiples of (a)'s full-batch rate max_batch / T")
    p.add_argument("--policies", default="fastbert,geep-verify", help="the policies whose rules are compared")
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--max-wait-ms", type=float, default=5.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cost", default=None, metavar="A_MS,GFLOPS",
                   help="a layer call's fixed cost (ms) and FLOP rate instead of fitting them here")
    p.add_argument("--output", default=None, help="a .md file for the tables")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    model = MultiExitClassifier.from_pretrained(args.model).eval()
    texts = load_texts(args.data or ["bbc:test", "tweets:test"], args.seed, n=args.requests)
    encoded = model.tokenize(texts)
    spec = FlopsSpec.from_model(model)
    if args.cost:
        a_ms, gflops = map(float, args.cost.split(","))
        a, R = a_ms / 1000, gflops * 1e9
    else:
        a, R = fit_cost(model, encoded, spec)
    cost = Cost(spec, a, R)
    backend = ReplayBackend(all_exit_logits(model, encoded, batch_size=32).logits, model.exit_layers,
                            model.num_layers)
    rng = random.Random(args.seed)
    batches = [rng.sample(range(len(texts)), args.max_batch) for _ in range(20)]
    T_full = statistics.mean(cost(args.max_batch, max(len(encoded["input_ids"][i]) for i in b), 0,
                                  model.num_layers) for b in batches)
    base = args.max_batch / T_full
    knobs = dict(t.split("=", 1) for t in args.threshold)
    wait = args.max_wait_ms / 1000
    runs = [("full", "layer", None, None), ("fastbert", "shrink", None, None)]
    runs += [(pol, "layer", order, fill) for pol in args.policies.split(",") for fill in FILLS
             for order in POOL_ORDERS]
    lines = ["# Pool order on a virtual clock (`benchmarks/serve_schedule_sim.py`)", "",
             f"model {args.model}; {len(texts)} requests of one text (bbc:test + tweets:test); max batch "
             f"{args.max_batch}, max wait {args.max_wait_ms} ms; one layer call = {1000 * a:.2f} ms + FLOPs / "
             f"{R / 1e9:.1f} GFLOP/s ({'given' if args.cost else 'fitted on this machine'}); (a)'s full batch T = {1000 * T_full:.0f} ms, "
             f"bound 4T; load 1 = {base:.1f} requests/s.", "",
             "| policy | batching | order | fill | capacity (x load 1) | " + " | ".join(
                 f"load {x}: p50/p95/p50 exit-1 ms" for x in args.loads.split(",")) + " |",
             "|---|---|---|---|---|" + "---|" * len(args.loads.split(","))]
    for policy_name, batching, order, fill in runs:
        spec = resolve_run(model, policy_name, float(knobs[policy_name]) if policy_name in knobs else None,
                           schedule="layer")
        policy, knob = spec.policy, spec.knob
        predicted = predicted_layers(model, spec, encoded)
        cells, capacity, failed = [], 0.0, False
        for j, load in enumerate(map(float, args.loads.split(","))):
            arrivals, t, gaps = [], 0.0, random.Random(args.seed * 1000 + j)  # the same arrivals for every rule
            for _ in range(len(texts)):
                t += gaps.expovariate(load * base)
                arrivals.append(t)
            strategy = Shrinking(wait) if batching == "shrink" else LayerPools(wait, order or "deepest",
                                                                               fill or "arrival")
            out = simulate(backend, policy, knob, strategy, encoded, predicted, arrivals, cost, args.max_batch)
            lat = [x for x, _ in out]
            first = [x for x, layer in out if layer == model.exit_layers[0]]
            p95 = pct(lat, 95)
            if not failed and p95 < 4 * T_full:
                capacity = load
            failed = failed or p95 >= 4 * T_full
            cells.append(f"{1000 * pct(lat, 50):.0f}/{1000 * p95:.0f}/{1000 * pct(first, 50):.0f}")
        lines.append(f"| {policy_name} | {batching} | {order or '-'} | {fill or '-'} | {capacity:g} | "
                     + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    if args.output:
        Path(args.output).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
