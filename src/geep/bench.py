"""The benchmark: accuracy against real speed-up for every exit policy, on the user's data and hardware.

For each model (several are benched together, labelled by name and training objective):

1. **Accuracy and FLOPs for every knob** of a grid spanning each policy's whole range come from ONE all-exits
   pass (``geep.engine.all_exit_logits``), replayed per policy by ``geep.calibrate.sweep``; the same logits serve
   every batch size (logits do not depend on the batch, FLOPs do).
2. **Wall-clock on a few knobs per policy** (:func:`timed_knobs`: ``timed_points`` spread evenly over the grid, both
   ends included; ``full`` and ``oracle`` have one point). A knob at which no row exits early (every row at the
   last layer: each policy's slow end) is not timed: it does ``full``'s work plus the policy's heads, ``full`` is
   timed beside it and the heads' cost is in its FLOPs speed-up; on a CPU those were the slowest runs of a bench
   and said the least. Every point runs from token ids through
   ``geep.engine.run_policy`` (the same length-sorted batching for every policy), under ``torch.inference_mode()``.
   :func:`time_interleaved` warms each point up, then times ``repeats`` rounds round-robin over all the points of
   a (model, batch size), so machine drift hits every point alike; ``torch.cuda.synchronize()`` brackets each run
   on a GPU; the clock is ``time.perf_counter``; each point keeps its median. ``full`` is timed in the same rounds
   and ``wall_speedup = median(full) / median(point)`` (``full``'s own is 1.0 exactly); ``samples_per_s =
   N / median``. Tokenising is timed separately (median of as many runs) and reported in the header.

Outputs (:func:`write_outputs`): ``bench.json`` (``{"header": ..., "records": [...]}``, one record per grid point
per policy per batch size, fields :data:`RECORD_FIELDS`), ``report.md`` and ``curves.png``.
:func:`pareto_frontier` and :func:`interpolated_throughput` are the helpers targets are computed with.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import platform
import statistics
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

import torch

from geep.errors import GeepError
from geep.policies import get_policy

if TYPE_CHECKING:
    from geep.model import MultiExitClassifier

logger = logging.getLogger(__name__)

DEFAULT_POLICIES = ("full", "fastbert", "deebert", "confidence", "pabee", "geep", "geep-verify", "oracle")
MIN_REPEATS = 3
MIN_TIMED_POINTS = 2

# Every record has exactly these keys. ``knob`` is None for full and oracle; ``exit_histogram`` maps each exit
# layer (a string key in JSON) to its row count; wall_speedup, samples_per_s, wall_seconds (the median) and
# wall_runs (every timed run's seconds, in round order) are None where the point was not timed; ``reporting_only``
# marks policies that read the true labels (oracle).
RECORD_FIELDS = ("model", "objective", "policy", "knob", "batch_size", "accuracy", "macro_f1", "mean_exit_layer",
                 "exit_histogram", "flops_speedup", "wall_speedup", "samples_per_s", "wall_seconds", "wall_runs", "timed",
                 "reporting_only", "device")


@dataclass
class BenchResult:
    """What :func:`bench` measured: the run's ``header`` (versions, data, device, per-model facts) and one record
    per grid point per policy per batch size (see :data:`RECORD_FIELDS`)."""

    header: dict[str, Any]
    records: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {"header": self.header, "records": self.records}


# ------------------------------------------------------------------------------------------------- checks
def check_policies(names: Sequence[str]) -> list[str]:
    """The policy names, checked (GeepError naming an unknown one), without duplicates, ``full`` first: it is the
    reference every wall speed-up is measured against, so it is always benched."""
    from geep.policies import POLICIES

    known = list(POLICIES)
    out = ["full"]
    for name in names:
        if name not in known:
            raise GeepError(f"unknown policy {name!r}; choose from: {', '.join(known)}")
        if name not in out:
            out.append(name)
    return out


def parse_batch_sizes(text: str) -> list[int]:
    """``"1,32"`` -> [1, 32]; GeepError on anything but positive integers."""
    sizes = []
    for part in text.split(","):
        part = part.strip()
        try:
            size = int(part)
        except ValueError:
            raise GeepError(f"--batch-sizes must be comma-separated positive integers, got {text!r}") from None
        if size < 1:
            raise GeepError(f"--batch-sizes must be positive, got {size}")
        if size not in sizes:
            sizes.append(size)
    return sizes


def check_settings(*, batch_sizes: Sequence[int], grid_points: int, timed_points: int, repeats: int,
                   warmup: int) -> None:
    """GeepError (one line) for settings the benchmark cannot honour."""
    if not batch_sizes or any(int(b) < 1 for b in batch_sizes):
        raise GeepError(f"batch sizes must be positive integers, got {list(batch_sizes)}")
    if repeats < MIN_REPEATS:
        raise GeepError(f"--repeats must be at least {MIN_REPEATS} (a median needs several runs), got {repeats}")
    if timed_points < MIN_TIMED_POINTS:
        raise GeepError(f"--timed-points must be at least {MIN_TIMED_POINTS} (both ends of each range), "
                        f"got {timed_points}")
    if grid_points < 2:
        raise GeepError(f"--grid-points must be at least 2, got {grid_points}")
    if warmup < 1:
        raise GeepError(f"--warmup must be at least 1, got {warmup}")


# ------------------------------------------------------------------------------------------------- timing
def timed_knobs(grid: Sequence[Any], n: int, speedups: Sequence[float] | None = None) -> list[int]:
    """Indices into ``grid`` of (at most) ``n`` knobs to time, both ends of the grid always included.

    Without ``speedups``, spread evenly over the grid's positions. With the grid's FLOPs speed-ups, spread evenly
    over the speed-up they realise (log scale), each target taking the first grid point nearest to it: a knob's
    useful range is often a small part of its scale (FastBERT's t in 0.05..0.3 on bbc), and timing points that
    all realise the same speed-up says nothing. All of a grid no longer than ``n``; the one point of a grid of one.
    """
    g = len(grid)
    if g <= n:
        return list(range(g))
    if speedups is None:
        return sorted({round(i * (g - 1) / (n - 1)) for i in range(n)})
    logs = [math.log(max(s, 1e-12)) for s in speedups]
    lo, hi = min(logs), max(logs)
    chosen = {0, g - 1}
    for i in range(1, n - 1):
        target = lo + (hi - lo) * i / (n - 1)
        chosen.add(min(range(g), key=lambda j: (abs(logs[j] - target), j)))
    return sorted(chosen)


def exits_early(exit_histogram: Mapping[int, int], last_layer: int) -> bool:
    """Whether any row of a point's exit histogram ({layer: rows}) leaves before ``last_layer``."""
    return any(count > 0 and layer < last_layer for layer, count in exit_histogram.items())


def time_interleaved(runs: Sequence[Callable[[], Any]], *, repeats: int, warmup: int = 1,
                     sync: Callable[[], None] | None = None,
                     on_run: Callable[[], None] | None = None) -> tuple[list[Any], list[list[float]]]:
    """Times each of ``runs`` ``repeats`` times, round-robin, after ``warmup`` untimed rounds.

    Round r runs every point once, starting at point ``r mod P`` (P points), so drift and any order effect
    spread over all points alike. ``sync`` (``torch.cuda.synchronize`` on a GPU) is called before the clock
    starts and before it stops. ``on_run`` is called after every run (a progress bar).
    Returns the outputs of the first warm-up round (None each without warm-up) and ``seconds[point][repeat]``.
    """
    P = len(runs)
    outputs: list[Any] = [None] * P
    for w in range(warmup):
        for i, run in enumerate(runs):
            out = run()
            if w == 0:
                outputs[i] = out
            if on_run is not None:
                on_run()
    seconds: list[list[float]] = [[] for _ in range(P)]
    for r in range(repeats):
        for j in range(P):
            i = (j + r) % P
            if sync is not None:
                sync()
            start = time.perf_counter()
            runs[i]()
            if sync is not None:
                sync()
            seconds[i].append(time.perf_counter() - start)
            if on_run is not None:
                on_run()
    return outputs, seconds


def describe_device(device: torch.device) -> str:
    """``"cpu (2 threads)"`` or the CUDA device's name, e.g. ``"cuda:0 (NVIDIA H100 80GB HBM3)"``."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    if device.type == "cpu":
        threads = torch.get_num_threads()
        return f"cpu ({threads} thread{'' if threads == 1 else 's'})"
    return str(device)


def _median_seconds(fn: Callable[[], Any], repeats: int) -> tuple[Any, float]:
    out = fn()  # warm-up (and the value kept)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return out, statistics.median(times)


# --------------------------------------------------------------------------------------------- the bench
def bench(models: Mapping[str, "MultiExitClassifier"], texts: Sequence[str], labels: Sequence[str],
          text_pairs: Sequence[str] | None = None, *, batch_sizes: Sequence[int] = (32,),
          policies: Sequence[str] = DEFAULT_POLICIES, grid_points: int = 21, timed_points: int = 5,
          repeats: int = 5, warmup: int = 1, device: str | torch.device | None = None,
          data_spec: str | None = None, show_progress: bool = False,
          extra_header: Mapping[str, Any] | None = None) -> BenchResult:
    """Benches every policy of ``policies`` on every model of ``models`` ({name: model}) over labelled texts.

    ``labels`` are label names (each model maps them to its own class ids; an unseen one is a GeepError).
    ``device`` moves every model there first (None: where each already is). Policies that need an exit table are
    skipped, with a logged note and a ``skipped_policies`` entry in the header, on models without one.
    """
    from geep.engine import resolve_device

    policies = check_policies(policies)
    batch_sizes = [int(b) for b in batch_sizes]
    check_settings(batch_sizes=batch_sizes, grid_points=grid_points, timed_points=timed_points, repeats=repeats,
                   warmup=warmup)
    if not models:
        raise GeepError("nothing to bench: no model")
    texts = list(texts)
    labels = list(labels)
    if len(labels) != len(texts):
        raise GeepError(f"{len(labels)} labels for {len(texts)} texts")
    if text_pairs is not None and len(text_pairs) != len(texts):
        raise GeepError(f"{len(text_pairs)} text pairs for {len(texts)} texts")
    if not texts:
        raise GeepError("nothing to bench: no rows")
    target = resolve_device(device)
    devices = set()
    for model in models.values():
        if target is not None:
            model.to(target)
        model.eval()
        devices.add(model.device)
    if len(devices) > 1:
        raise GeepError(f"the models are on different devices ({', '.join(map(str, devices))}); pass a device")
    (run_device,) = devices
    device_name = describe_device(run_device)
    header: dict[str, Any] = {
        **environment(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "data": data_spec,
        "n": len(texts),
        "data_sha256": data_hash(texts, text_pairs, labels),
        "device": device_name,
        "torch_threads": torch.get_num_threads(),
        "batch_sizes": batch_sizes,
        "policies": policies,
        "grid_points": grid_points,
        "timed_points": timed_points,
        "repeats": repeats,
        "warmup": warmup,
        **dict(extra_header or {}),
        "models": {},
    }
    records: list[dict[str, Any]] = []
    for name, model in models.items():
        info, model_records = bench_model(
            model, name, texts, labels, text_pairs, batch_sizes=batch_sizes, policies=policies,
            grid_points=grid_points, timed_points=timed_points, repeats=repeats, warmup=warmup,
            device_name=device_name, show_progress=show_progress)
        header["models"][name] = info
        records.extend(model_records)
    return BenchResult(header, records)


def bench_model(model: "MultiExitClassifier", name: str, texts: list[str], labels: list[str],
                text_pairs: Sequence[str] | None, *, batch_sizes: Sequence[int], policies: Sequence[str],
                grid_points: int, timed_points: int, repeats: int, warmup: int, device_name: str,
                show_progress: bool = False) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One model's header entry and records (see :func:`bench`)."""
    from geep.calibrate import sweep
    from geep.engine import all_exit_logits, label_ids

    objective = model.config.objective
    y = label_ids(model, labels)  # (N,) class ids
    skipped = [p for p in policies if get_policy(p).needs_table and model.exit_table is None]
    if skipped:
        logger.info("%s: no exit table, skipping %s (build one with `geep build-table`)", name, ", ".join(skipped))
    active = [p for p in policies if p not in skipped]
    pairs = None if text_pairs is None else list(text_pairs)
    encoded, tokenize_seconds = _median_seconds(lambda: model.tokenize(texts, pairs), repeats)
    n = len(texts)
    logger.info("%s (%s): %d rows tokenised in %.3f s; all-exits pass", name, objective, n, tokenize_seconds)
    with torch.inference_mode():
        exit_logits = all_exit_logits(model, encoded, batch_size=max(batch_sizes),
                                      show_progress=show_progress).logits  # (N, |E|, C)
    records: list[dict[str, Any]] = []
    full_point = None
    for batch_size in batch_sizes:
        result = sweep(model, encoded, y, policies=active, batch_size=batch_size, grid_points=grid_points,
                       exit_logits=exit_logits)
        full_point = result.full
        walls = _time_points(model, name, encoded, y, result.points, batch_size=batch_size,
                             timed_points=timed_points, repeats=repeats, warmup=warmup, show_progress=show_progress)
        full_median = statistics.median(walls[("full", 0)])
        for policy in active:
            needs_labels = get_policy(policy).needs_labels
            for i, point in enumerate(result.points[policy]):
                runs = walls.get((policy, i))
                median = None if runs is None else statistics.median(runs)
                records.append({
                    "model": name,
                    "objective": objective,
                    "policy": policy,
                    "knob": point.knob,
                    "batch_size": batch_size,
                    "accuracy": point.accuracy,
                    "macro_f1": point.macro_f1,
                    "mean_exit_layer": point.mean_exit_layer,
                    "exit_histogram": {str(k): v for k, v in point.exit_histogram.items()},
                    "flops_speedup": point.flops_speedup,
                    "wall_speedup": None if median is None else (1.0 if policy == "full" else full_median / median),
                    "samples_per_s": None if median is None else n / median,
                    "wall_seconds": median,
                    "wall_runs": runs,
                    "timed": median is not None,
                    "reporting_only": needs_labels,
                    "device": device_name,
                })
    info = {
        "objective": objective,
        "num_layers": model.num_layers,
        "exit_layers": list(model.exit_layers),
        "exit_table": model.exit_table is not None,
        "full_accuracy": full_point.accuracy,
        "full_macro_f1": full_point.macro_f1,
        "tokenize_seconds": tokenize_seconds,
        "tokenize_samples_per_s": n / tokenize_seconds if tokenize_seconds > 0 else None,
        "skipped_policies": skipped,
    }
    return info, records


def _time_points(model: "MultiExitClassifier", name: str, encoded: dict, labels: torch.Tensor,
                 points: Mapping[str, Sequence[Any]], *, batch_size: int, timed_points: int, repeats: int,
                 warmup: int, show_progress: bool) -> dict[tuple[str, int], list[float]]:
    """Every timed run's wall seconds of the timed points, keyed by (policy, index into its grid)."""
    from tqdm.auto import tqdm

    from geep.engine import run_policy

    keys: list[tuple[str, int]] = []
    runs: list[Callable[[], Any]] = []
    for policy, scored in points.items():
        for i in timed_knobs(scored, timed_points, [p.flops_speedup for p in scored]):
            if policy != "full" and not exits_early(scored[i].exit_histogram, model.num_layers):
                continue  # full's work (see the module docstring)
            knob = scored[i].knob
            run_labels = labels if get_policy(policy).needs_labels else None
            keys.append((policy, i))
            runs.append(lambda p=policy, k=knob, y=run_labels: run_policy(model, encoded, p, k, batch_size=batch_size,
                                                                          labels=y))
    sync = torch.cuda.synchronize if model.device.type == "cuda" else None
    logger.info("%s, batch %d: timing %d points x %d repeats (+%d warm-up)", name, batch_size, len(runs), repeats,
                warmup)
    bar = tqdm(total=len(runs) * (warmup + repeats), disable=not show_progress, unit="run",
               desc=f"{name} b={batch_size}", leave=False)
    try:
        with torch.inference_mode():
            outputs, seconds = time_interleaved(runs, repeats=repeats, warmup=warmup, sync=sync, on_run=bar.update)
    finally:
        bar.close()
    for (policy, i), out in zip(keys, outputs):
        _check_against_sweep(name, policy, points[policy][i], out, labels, batch_size, model.num_layers)
    return dict(zip(keys, seconds))


def _check_against_sweep(name: str, policy: str, point: Any, run: Any, labels: torch.Tensor, batch_size: int,
                         num_layers: int) -> None:
    """Logs a warning when a timed run disagrees with the sweep's replay of the same knob (beyond one row's
    worth, which a decision exactly at the threshold can flip by float noise)."""
    n = len(labels)
    accuracy = float((run.probabilities.argmax(-1) == labels).float().mean())
    mean_layer = float(run.exit_layers.float().mean())
    if abs(accuracy - point.accuracy) > 1.5 / n or abs(mean_layer - point.mean_exit_layer) > 1.5 * (num_layers - 1) / n:
        logger.warning("%s, batch %d: %s at knob %s ran at accuracy %.4f, mean layer %.3f; the sweep replayed "
                       "%.4f, %.3f", name, batch_size, policy, point.knob, accuracy, mean_layer, point.accuracy,
                       point.mean_exit_layer)


# ---------------------------------------------------------------------------------------------- provenance
def data_hash(texts: Sequence[str], text_pairs: Sequence[str] | None, labels: Sequence[str]) -> str:
    """sha256 (hex) of the benched rows: texts, text pairs (or null) and labels, in order, as compact JSON."""
    payload = json.dumps({"texts": list(texts), "text_pairs": None if text_pairs is None else list(text_pairs),
                          "labels": list(labels)}, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def environment() -> dict[str, Any]:
    """Versions (python, torch, transformers, geep) and the git commit of the geep source (null outside git)."""
    import transformers

    import geep

    return {
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__, "geep": geep.__version__},
        "git_commit": _git(["rev-parse", "HEAD"]),
        "git_dirty": None if (status := _git(["status", "--porcelain", "--untracked-files=no"])) is None
        else bool(status),
        "platform": platform.platform(),
    }


def _git(args: list[str]) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=Path(__file__).resolve().parent, capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


# ------------------------------------------------------------------------------------------ frontiers
def _get(point: Any, key: str) -> Any:
    return point[key] if isinstance(point, Mapping) else getattr(point, key)


def pareto_frontier(points: Iterable[Any], x: str, y: str) -> list[Any]:
    """The points not dominated in (x, y), both larger-is-better, sorted by x ascending (so y descending).

    ``points`` are dicts (records) or objects (e.g. ``KnobPoint``); ``x`` and ``y`` name their fields. A point is
    dominated when another has x' >= x and y' >= y with at least one strictly greater. Of points equal in both,
    the first (in input order) is kept. Points whose x or y is None or NaN are ignored.
    """
    valid = []
    for i, p in enumerate(points):
        px, py = _get(p, x), _get(p, y)
        if px is None or py is None or (isinstance(px, float) and math.isnan(px)) or \
                (isinstance(py, float) and math.isnan(py)):
            continue
        valid.append((float(px), float(py), i, p))
    # Largest x first, and for equal x the largest y first; then a point is on the frontier iff its y beats
    # every y seen so far (those all have x' >= x).
    valid.sort(key=lambda t: (-t[0], -t[1], t[2]))
    frontier, best_y = [], -math.inf
    for px, py, _, p in valid:
        if py > best_y:
            frontier.append(p)
            best_y = py
    frontier.reverse()
    return frontier


def interpolated_throughput(records: Iterable[Mapping[str, Any]], accuracy: float, *,
                            speed: str = "samples_per_s") -> float | None:
    """The highest throughput (samples/s) one policy reaches at an accuracy of at least ``accuracy``.

    ``records``: the timed records of ONE (model, policy, batch size) -- records whose ``speed`` is None
    (untimed) are ignored; mixing models, policies or batch sizes is a ValueError. Their Pareto frontier in
    (``speed``, accuracy) is taken (:func:`pareto_frontier`), sorted by throughput t_1 < ... < t_m with
    accuracies a_1 > ... > a_m. Then:

    - ``accuracy`` above a_1 (more than any timed point reaches) or no timed record: None;
    - ``accuracy`` <= a_m: t_m (the fastest point already reaches it);
    - otherwise, with a_i >= accuracy > a_{i+1}: ``t_i + (t_{i+1} - t_i) * (a_i - accuracy) / (a_i - a_{i+1})``,
      linear interpolation in accuracy between the adjacent frontier points (exactly t_i when a_i == accuracy).

    ``speed`` may name another larger-is-better field (``wall_speedup``, ``flops_speedup``).
    """
    records = [r for r in records if r.get(speed) is not None]
    groups = {(r.get("model"), r.get("policy"), r.get("batch_size")) for r in records}
    if len(groups) > 1:
        raise ValueError(f"interpolated_throughput takes one (model, policy, batch size), "
                         f"got {sorted(groups, key=str)}")
    frontier = pareto_frontier(records, speed, "accuracy")
    if not frontier or accuracy > frontier[0]["accuracy"]:
        return None
    for slow, fast in zip(frontier, frontier[1:]):
        a_i, a_j = slow["accuracy"], fast["accuracy"]
        if a_i >= accuracy > a_j:
            t_i, t_j = slow[speed], fast[speed]
            return float(t_i + (t_j - t_i) * (a_i - accuracy) / (a_i - a_j))
    return float(frontier[-1][speed])


# ------------------------------------------------------------------------------------------------ outputs
def write_outputs(result: BenchResult, directory: str | Path) -> dict[str, Path]:
    """Writes ``bench.json``, ``report.md`` and ``curves.png`` into ``directory`` (created), each atomically."""
    from geep.io import write_text_atomic

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"json": directory / "bench.json", "report": directory / "report.md", "curves": directory / "curves.png"}
    write_text_atomic(paths["json"], json.dumps(result.to_dict(), indent=1, ensure_ascii=False) + "\n")
    write_text_atomic(paths["report"], render_report(result, curves=paths["curves"].name))
    plot_curves(result, paths["curves"])
    return paths


def load_result(path: str | Path) -> BenchResult:
    """A :class:`BenchResult` read back from a ``bench.json``."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return BenchResult(data["header"], data["records"])


def summary_rows(result: BenchResult, max_drop: float = 1.0) -> list[dict[str, Any]]:
    """Per (model, batch size, policy): the fastest timed point whose accuracy is at most ``max_drop`` points
    below ``full``'s (the record, or None where no timed point is that accurate), with ``full``'s record."""
    rows = []
    for (name, batch_size), records in _groups(result.records).items():
        full = next(r for r in records if r["policy"] == "full")
        floor = full["accuracy"] - max_drop / 100.0 - 1e-12
        for policy, pts in _by_policy(records).items():
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


def _groups(records: Sequence[Mapping[str, Any]]) -> dict[tuple[str, int], list[Mapping[str, Any]]]:
    out: dict[tuple[str, int], list[Mapping[str, Any]]] = {}
    for r in records:
        out.setdefault((r["model"], r["batch_size"]), []).append(r)
    return out


def _by_policy(records: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    out: dict[str, list[Mapping[str, Any]]] = {}
    for r in records:
        out.setdefault(r["policy"], []).append(r)
    return out


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
    for (name, batch_size), records in _groups(result.records).items():
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
        for policy, pts in _by_policy(records).items():
            if len(pts) == 1:
                continue  # full, oracle: one point, in the table above
            wall = pareto_frontier([p for p in pts if p["timed"]], "wall_speedup", "accuracy")
            flops = pareto_frontier(pts, "flops_speedup", "accuracy")
            lines.append(f"- `{policy}` wall: " + ", ".join(
                f"{_fmt_knob(p['knob'])} ({100 * p['accuracy']:.1f}%, {p['wall_speedup']:.2f}x)" for p in wall))
            lines.append(f"  FLOPs ({len(flops)} of {len(pts)} grid points): " + ", ".join(
                f"{_fmt_knob(p['knob'])} ({100 * p['accuracy']:.1f}%, {p['flops_speedup']:.2f}x)" for p in flops))
    return "\n".join(lines) + "\n"


_POLICY_COLOURS = {"fastbert": "tab:blue", "deebert": "tab:orange", "confidence": "tab:green", "pabee": "tab:purple",
                   "geep": "tab:red", "geep-verify": "tab:brown", "oracle": "gold", "full": "black"}
_LINESTYLES = ["-", "--", ":", "-."]
_FULL_MARKERS = ["o", "s", "D", "^"]
_NICE_TICKS = [0.25, 0.5, 0.75, 1, 1.25, 1.5, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 48, 64]


def plot_curves(result: BenchResult, path: str | Path) -> None:
    """``curves.png``: a row per batch size, two panels -- accuracy vs wall speed-up (timed points) and accuracy
    vs FLOPs speed-up (every grid point) -- a line per (model, policy): colour = policy, line style = model.
    ``full`` is a black marker at (1, its accuracy); the oracle a star; log-scale x; one legend below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator

    from geep.io import atomic_path

    records = result.records
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
        for col, (xkey, title) in enumerate((("wall_speedup", "wall-clock"), ("flops_speedup", "FLOPs"))):
            ax = axes[row][col]
            xs_all = []
            for mi, m in enumerate(models):
                style = _LINESTYLES[mi % len(_LINESTYLES)]
                pts = [r for r in records if r["model"] == m and r["batch_size"] == batch_size
                       and r[xkey] is not None]
                for policy, group in _by_policy(pts).items():
                    group = sorted(group, key=lambda r: r[xkey])
                    xs = [r[xkey] for r in group]
                    ys = [100 * r["accuracy"] for r in group]
                    xs_all += xs
                    label = f"{policy}{model_label(m)}"
                    if policy == "full":
                        h = ax.scatter(xs, ys, marker=_FULL_MARKERS[mi % len(_FULL_MARKERS)], s=70, c="black",
                                       zorder=5, label=label)
                    elif policy == "oracle":
                        h = ax.scatter(xs, ys, marker="*", s=260, c=_POLICY_COLOURS["oracle"], edgecolors="black",
                                       linewidths=0.8 if mi == 0 else 1.6, zorder=6, label=label + " (labels)")
                    else:
                        colour = _POLICY_COLOURS.get(policy)
                        (h,) = ax.plot(xs, ys, linestyle=style, marker="o", markersize=4 if col else 5,
                                       color=colour, label=label, alpha=0.9)
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
            ax.set_xlabel(f"{title} speed-up vs full (log scale)")
            ax.set_ylabel("accuracy (%)")
            what = "timed points" if col == 0 else "every grid point"
            ax.set_title(f"batch {batch_size}: accuracy vs {title} speed-up ({what})", fontsize=10)
    device = result.header.get("device", "")
    fig.suptitle(f"geep bench: {result.header.get('data')} (N = {result.header.get('n')}), {device}", fontsize=11)
    fig.legend(list(handles.values()), list(handles.keys()), loc="outside lower center",
               ncol=min(4, max(1, len(handles))), fontsize=9, frameon=False)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
