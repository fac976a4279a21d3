"""Issues 11 and 23's load benchmark: `geep serve` under open-loop Poisson load and closed-loop clients, over HTTP.

Side by side in one run (``--configs``, default all four): (a) ``full`` (a plain dynamic batcher), (b) ``fastbert``
with ``--batching shrink`` (early exit as served today), (c) ``fastbert`` with ``--batching layer``, (d)
``geep-verify`` with ``--batching layer``. Each configuration is its own `geep serve` process at ``--threads 1``,
pinned to ``--server-cpus``; the load comes from `benchmarks/serve_client.py` in its own process pinned to
``--client-cpus``. One text per request, half from each ``--data`` set (default bbc:test and tweets:test). Every
server runs at ``--precision`` (default fp32; ``int8`` for issue 23: then (a) is a full-model int8 dynamic batcher).

First, (a)'s latency for one full batch (``--max-batch`` texts in one request, idle server, median of 5): T. The
latency bound is 4T. The open-loop ladder is ``--rates`` (requests/s) or ``--rate-factors`` times 32/T-ish, i.e.
(a)'s full-batch rate ``max_batch / T``. A configuration's ladder stops after the first rate whose p95 is over the
bound (higher rates only queue longer); a ladder that ends with every p95 under the bound goes on, each rate
``--extend-factor`` times the last, until one is over (at most ``--max-extra-rates`` more), so that every capacity
is bounded from above. Capacity = the highest ladder rate up to which every p95 stayed under the bound; rejected or
failed requests count as never answered. Then every configuration also runs at half of (a)'s capacity, and
closed-loop with ``--closed-clients`` clients. Per point: throughput, p50/p95/p99 overall and by exit layer, mean
batch size per layer (from the server's /metrics), rejections and errors, the client's CPU share.

An open-loop point sends Poisson arrivals for ``--point-s`` seconds (rate x point-s requests, at least
``--requests``), long enough that a server falling behind does cross the bound: offered a rate (1 + e) times what it
can serve, its backlog grows by e x capacity requests a second, so the request sent at 95% of a point of D seconds
waits about 0.95 e D; it crosses the bound B once e >= B / (0.95 D) (the report gives this resolution; 30 s and a
bound of 2 s: 7%). With a fixed, small number of requests a point can end before the queue has grown that long.

Everything is bounded: each point sends for at most ``--max-point-s`` seconds, every request times out, and the
run skips what is left once ``--budget-min`` minutes have passed (said in the report).

    python benchmarks/serve_load.py --model runs/bbc-geep --precision int8 --server-cpus 0 --client-cpus 1 \\
        --rate-factors 0.5,1,1.5,2,2.5,3,4,5 --point-s 30 --output benchmarks/results/serve_load_int8
"""

from __future__ import annotations

import argparse
import json
import math
import os
import queue
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_report import write_report  # noqa: E402

HERE = Path(__file__).resolve().parent
CONFIGS = {"a": ("full", "layer"), "b": ("fastbert", "shrink"), "c": ("fastbert", "layer"),
           "d": ("geep-verify", "layer")}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="a geep model directory (a bbc MiniLM model for issue 11)")
    p.add_argument("--data", action="append", default=None, help="repeatable (default: bbc:test, tweets:test)")
    p.add_argument("--configs", default="a,b,c,d", help="which of a,b,c,d (a is needed for the bound)")
    p.add_argument("--rates", default=None, help="open-loop rates, requests/s, e.g. 2,4,8")
    p.add_argument("--rate-factors", default="0.5,1,1.5,2,2.5,3,4,5",
                   help="rates as multiples of (a)'s full-batch rate max_batch/T (used without --rates)")
    p.add_argument("--precision", default="fp32", help="every server's --precision (issue 23: int8)")
    p.add_argument("--requests", type=int, default=500,
                   help="requests per closed-loop point, and at least this many per open-loop point (issue 11: 500)")
    p.add_argument("--point-s", type=float, default=30.0, help="seconds of arrivals per open-loop point (default 30)")
    p.add_argument("--max-point-s", type=float, default=300.0, help="most seconds of sending per point")
    p.add_argument("--extend-factor", type=float, default=1.5,
                   help="a ladder still under the bound goes on at this times its last rate")
    p.add_argument("--max-extra-rates", type=int, default=8, help="most rates added to a ladder (0: none)")
    p.add_argument("--closed-clients", default="1,8,32", help="closed-loop points: clients (empty: none)")
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--batch-repeats", type=int, default=5, help="timed full batches of (a) for T (median)")
    p.add_argument("--max-wait-ms", type=float, default=5.0)
    p.add_argument("--threshold", action="append", default=[], metavar="POLICY=KNOB",
                   help="a policy's knob (default: the model's calibrated one), e.g. fastbert=0.3")
    p.add_argument("--serve-arg", action="append", default=[], help="extra `geep serve` flag, e.g. --pool-order=oldest")
    p.add_argument("--server-cpus", default="0")
    p.add_argument("--client-cpus", default="1")
    p.add_argument("--budget-min", type=float, default=30.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", required=True, help="directory for serve_load.json, .md and p95.png")
    return p.parse_args(argv)


def load_texts(specs: list[str], seed: int, n: int = 2000) -> list[str]:
    """n texts, half from each source (or evenly over the sources), seeded."""
    from geep.data import get_columns, load_dataset_spec

    rng = random.Random(seed)
    per_source = [get_columns(load_dataset_spec(s), "text", None, None, source=s, require_labels=False).texts
                  for s in specs]
    return [rng.choice(per_source[i % len(per_source)]) for i in range(n)]


def cpus(text: str) -> set[int]:
    return {int(c) for c in text.split(",")}


class Server:
    """A `geep serve` process pinned to ``cpus``; ``url`` once it said where it listens; /ready waited for."""

    def __init__(self, args: argparse.Namespace, policy: str, batching: str) -> None:
        command = [sys.executable, "-m", "geep.cli.main", "serve", "--model", args.model, "--port", "0",
                   "--policy", policy, "--batching", batching, "--threads", "1", "--precision", args.precision,
                   "--max-batch",
                   str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms), "--request-timeout-s", "60",
                   *[a for a in args.serve_arg]]
        knobs = dict(t.split("=", 1) for t in args.threshold)
        if policy in knobs:
            command += ["--threshold", knobs[policy]]
        pin = cpus(args.server_cpus)
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True,
                                     preexec_fn=lambda: os.sched_setaffinity(0, pin))
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: lines.put(self.proc.stdout.readline()), daemon=True).start()
        try:
            line = lines.get(timeout=300)  # the server's first line says where it listens
        except queue.Empty:
            self.proc.kill()
            raise RuntimeError("geep serve said nothing within 300 s") from None
        if " on http://" not in line:
            raise RuntimeError(f"geep serve did not start: {line!r} (exit {self.proc.wait(timeout=60)})")
        self.url = line.split(" on ")[1].split()[0]
        deadline = time.monotonic() + 300
        while httpx.get(f"{self.url}/ready", timeout=30).status_code != 200:
            if time.monotonic() > deadline:
                raise RuntimeError("the server was not ready within 300 s")
            time.sleep(0.2)

    def metrics(self) -> dict:
        """(batch sums and counts per layer, rejections) from /metrics."""
        text = httpx.get(f"{self.url}/metrics", timeout=30).text
        out: dict = {"batch_sum": {}, "batch_count": {}, "rejected": 0.0}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == "geep_batch_size_sum":
                    out["batch_sum"][s.labels["layer"]] = s.value
                elif s.name == "geep_batch_size_count":
                    out["batch_count"][s.labels["layer"]] = s.value
                elif s.name == "geep_rejections_total":
                    out["rejected"] += s.value
        return out

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=120)


def client_point(args: argparse.Namespace, job: dict) -> dict:
    """Runs one point in the client process (pinned to --client-cpus); its JSON result."""
    pin = cpus(args.client_cpus)
    done = subprocess.run([sys.executable, str(HERE / "serve_client.py")], input=json.dumps(job),
                          capture_output=True, text=True, preexec_fn=lambda: os.sched_setaffinity(0, pin),
                          timeout=job["max_s"] + 180)
    if done.returncode != 0:
        raise RuntimeError(f"the client failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout)


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (nearest rank); inf entries count as never answered."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(q / 100 * len(ordered) + 0.5)) - 1))]


def summarise(result: dict, before: dict, after: dict) -> dict:
    """Per-point figures from the client's results and the server's metrics before and after."""
    rows = result["results"]
    ok = [r for r in rows if r[1] == 200]
    latency = [r[0] if r[1] == 200 else float("inf") for r in rows]
    by_layer: dict[str, list[float]] = {}
    for r in ok:
        by_layer.setdefault(str(r[2]), []).append(r[0])
    batch = {}
    for layer, total in after["batch_sum"].items():
        count = after["batch_count"][layer] - before["batch_count"].get(layer, 0.0)
        if count:
            batch[layer] = (total - before["batch_sum"].get(layer, 0.0)) / count
    return {
        "sent": len(rows), "ok": len(ok), "rejected_503": sum(r[1] == 503 for r in rows),
        "errors": sum(r[1] not in (200, 503) for r in rows), "wall_s": result["wall_s"],
        "throughput": len(ok) / result["wall_s"] if result["wall_s"] else 0.0,
        "p50": percentile(latency, 50), "p95": percentile(latency, 95), "p99": percentile(latency, 99),
        "by_exit": {k: {"n": len(v), "p50": percentile(v, 50), "p95": percentile(v, 95), "p99": percentile(v, 99)}
                    for k, v in sorted(by_layer.items(), key=lambda kv: int(kv[0]))},
        "mean_batch_by_layer": dict(sorted(batch.items(), key=lambda kv: int(kv[0]))),
        "server_rejections": after["rejected"] - before["rejected"],
        "client_cpu_share": result["client_cpu_s"] / result["wall_s"] if result["wall_s"] else None,
    }


def full_batch_latency(server: Server, texts: list[str], max_batch: int, repeats: int, rng: random.Random) -> float:
    """(a)'s latency for one full batch: max_batch texts in one request on an idle server, the median of
    ``repeats`` after one warm-up."""
    times = []
    with httpx.Client(base_url=server.url, timeout=120) as http:
        for i in range(repeats + 1):
            batch = rng.sample(texts, max_batch)
            start = time.perf_counter()
            r = http.post("/predict", json={"inputs": batch})
            r.raise_for_status()
            if i >= 1:
                times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.monotonic()
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    texts = load_texts(args.data or ["bbc:test", "tweets:test"], args.seed)
    configs = [c.strip() for c in args.configs.split(",")]
    if configs[0] != "a":
        raise SystemExit("--configs must start with a: (a) sets the latency bound and the half-capacity rate")
    from geep.bench.provenance import environment

    record: dict = {"environment": environment(), "args": vars(args), "configs": {c: CONFIGS[c] for c in configs},
                    "points": [], "skipped": []}
    rng = random.Random(args.seed)
    over_budget = lambda: time.monotonic() - began > args.budget_min * 60  # noqa: E731

    def point(server: Server, config: str, mode: str, value: float) -> dict | None:
        """One point: ``mode`` open (``value`` requests/s), half (open, at half of (a)'s capacity) or closed
        (``value`` clients)."""
        if over_budget():
            record["skipped"].append([config, mode, value])
            return None
        requests, max_s = args.requests, args.max_point_s
        if mode != "closed":  # point-s seconds of arrivals (at least --requests); the count ends the point
            requests = max(args.requests, math.ceil(value * args.point_s))
            max_s = min(args.max_point_s, 1.2 * requests / value + 1.0)
        job = {"url": server.url, "mode": "closed" if mode == "closed" else "open", "requests": requests,
               "max_s": max_s, "texts": texts, "seed": rng.randrange(1 << 30), "timeout_s": 60.0,
               ("clients" if mode == "closed" else "rate"): value}
        before = server.metrics()
        result = client_point(args, job)
        summary = {"config": config, "mode": mode, "offered": value, **summarise(result, before, server.metrics())}
        if mode != "closed":  # the smallest overload (a fraction over capacity) this point's length shows
            summary["resolution"] = record["bound_s"] / (0.95 * requests / value)
        record["points"].append(summary)
        print(f"  ({config}) {mode} {value:g}: {summary['throughput']:.1f}/s, p50 {summary['p50']:.3f} s, "
              f"p95 {summary['p95']:.3f} s, rejected {summary['rejected_503']}, client CPU "
              f"{summary['client_cpu_share']:.0%}", flush=True)
        return summary

    half = None
    for config in configs:
        policy, batching = CONFIGS[config]
        print(f"({config}) {policy}, --batching {batching}", flush=True)
        server = Server(args, policy, batching)
        try:
            if config == "a":
                T = full_batch_latency(server, texts, args.max_batch, args.batch_repeats, rng)
                record["full_batch_latency_s"], record["bound_s"] = T, 4 * T
                base = args.max_batch / T
                rates = ([float(r) for r in args.rates.split(",")] if args.rates
                         else [round(f * base, 2) for f in map(float, args.rate_factors.split(","))])
                record["rates"] = rates
                print(f"  full batch of {args.max_batch}: {T:.3f} s; bound 4T = {4 * T:.3f} s", flush=True)
            capacity, over = 0.0, None  # over: the first rate over the bound (None: none on the ladder)
            ladder = list(rates)
            extra = [round(rates[-1] * args.extend_factor ** i, 2) for i in range(1, args.max_extra_rates + 1)]
            for rate in ladder + extra:
                s = point(server, config, "open", rate)
                if s is None:
                    over = "skipped"
                    break
                if not s["p95"] < record["bound_s"]:
                    over = rate
                    break
                capacity = rate
            record.setdefault("capacity", {})[config] = capacity
            record.setdefault("first_over", {})[config] = over
            if config == "a":
                half = capacity / 2 if capacity else None
            if half:
                point(server, config, "half", half)
            for clients in [int(c) for c in args.closed_clients.split(",") if c]:
                point(server, config, "closed", clients)
        finally:
            record.setdefault("exit_status", {})[config] = server.stop()
    record["elapsed_s"] = time.monotonic() - began
    (out / "serve_load.json").write_text(json.dumps(record, indent=1))
    write_report(record, out)
    print(f"wrote {out}/serve_load.json, serve_load.md, serve_load_p95.png ({record['elapsed_s'] / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
