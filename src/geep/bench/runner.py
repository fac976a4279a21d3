"""The benchmark: accuracy against real speed-up for every exit policy, on the user's data and hardware.

For each model (several are benched together, labelled by name and training objective):

1. **Accuracy and FLOPs for every knob** of a grid spanning each policy's whole range come from ONE all-exits
   pass (``geep.inference.all_exit_logits``), each knob run by the real scheduler on those logits
   (``geep.evaluation.sweep``); the same logits serve every batch size (logits do not depend on the batch, FLOPs
   do).
2. **Wall-clock along each policy's FLOPs frontier** (``geep.bench.frontier.frontier_knobs``: ``timed_points``
   knobs of the frontier: the fastest within ``accuracy_budget`` points of ``full`` at fp32, its neighbours on both
   sides, then points spread over the rest; ``full`` and ``oracle`` have one point). A knob at which no row exits
   early (every row at the last layer: each policy's slow end) is not timed: it does ``full``'s work plus the
   policy's heads, ``full`` is timed beside it and the heads' cost is in its FLOPs speed-up; on a CPU those were the
   slowest runs of a bench and said the least. Every point runs from token ids through
   ``geep.inference.run_policy`` (the same length-sorted batching for every policy), under ``torch.inference_mode()``.
   :func:`time_interleaved` warms each point up, then times ``repeats`` rounds round-robin over all the points of
   a (model, batch size), so machine drift hits every point alike; ``torch.cuda.synchronize()`` brackets each run
   on a GPU; the clock is ``time.perf_counter``; each point keeps its median. ``full`` is timed in the same rounds
   and ``wall_speedup = median(full) / median(point)`` (``full``'s own is 1.0 exactly); ``samples_per_s =
   N / median``. Tokenising is timed separately (median of as many runs) and reported in the header.

3. **Precisions side by side** (``precisions``, e.g. fp32 and int8): each precision has its own all-exits pass
   and sweep (int8 confidences differ from fp32's; FLOPs do not), and every precision's timed points run in the
   same interleaved rounds, so ``full`` at int8 (the user's alternative to early exit) and every policy at int8 are
   measured against ``full`` at fp32 and against each other in one run.

Outputs (``geep.bench.report.write_outputs``): ``bench.json`` (``{"header": ..., "records": [...]}``, one record
per grid point per policy per batch size, fields ``geep.bench.result.RECORD_FIELDS``), ``report.md`` and
``curves.png``. ``geep.evaluation.metrics`` has the Pareto frontier and interpolated throughput targets use.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import torch
from tqdm.auto import tqdm

from geep.bench.frontier import frontier_knobs
from geep.bench.provenance import data_hash, environment
from geep.bench.result import BenchResult
from geep.bench.timing import describe_device, median_seconds, time_interleaved
from geep.errors import GeepError
from geep.evaluation.sweep import sweep
from geep.evaluation.temperature import calibration_errors
from geep.inference.inputs import label_ids
from geep.inference.runs import all_exit_logits, run_spec
from geep.evaluation.metrics import difficulty_inversion_score
from geep.inference.spec import policy_for, resolve_device, resolve_run, usable_policies
from geep.modeling.cascade import Cascade
from geep.modeling.model import MultiExitClassifier
from geep.policies import POLICIES, VerifyKnob, get_policy, policies_for
from geep.policies.cascade import CascadeKnob
from geep.tasks import Task

logger = logging.getLogger(__name__)

DEFAULT_POLICIES = ("full", "fastbert", "deebert", "confidence", "pabee", "geep", "geep-verify", "oracle", "elbert",
                    "vote", "lte", "margin", "sentee")
MIN_REPEATS = 5  # a wall-clock comparison is a median of at least 5 interleaved runs
MIN_TIMED_POINTS = 1


# ------------------------------------------------------------------------------------------------- checks
def check_policies(names: Sequence[str]) -> list[str]:
    """The policy names, checked (GeepError naming an unknown one), without duplicates, ``full`` first: it is the
    reference every wall speed-up is measured against, so it is always benched."""
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
                   warmup: int, accuracy_budget: float = 1.0) -> None:
    """GeepError (one line) for settings the benchmark cannot honour."""
    if not batch_sizes or any(int(b) < 1 for b in batch_sizes):
        raise GeepError(f"batch sizes must be positive integers, got {list(batch_sizes)}")
    if repeats < MIN_REPEATS:
        raise GeepError(f"--repeats must be at least {MIN_REPEATS} (a median needs several runs), got {repeats}")
    if timed_points < MIN_TIMED_POINTS:
        raise GeepError(f"--timed-points must be at least {MIN_TIMED_POINTS} (the fastest point within the "
                        f"accuracy budget), got {timed_points}")
    if not (math.isfinite(accuracy_budget) and 0 <= accuracy_budget <= 100):
        raise GeepError(f"--accuracy-budget must be in [0, 100] points, got {accuracy_budget}")
    if grid_points < 2:
        raise GeepError(f"--grid-points must be at least 2, got {grid_points}")
    if warmup < 1:
        raise GeepError(f"--warmup must be at least 1, got {warmup}")


# ------------------------------------------------------------------------------------------------- timing
def split_knob(knob: Any) -> tuple[Any, float | None]:
    """A grid point's knob as a record stores it: (``knob``, ``continue_threshold``); geep-verify's pair is
    (tau, t), every other knob (knob, None)."""
    if isinstance(knob, VerifyKnob):
        return knob.tau, knob.continue_threshold
    return knob, None


def exits_early(exit_histogram: Mapping[int, int], last_layer: int) -> bool:
    """Whether any row of a point's exit histogram ({layer: rows}) leaves before ``last_layer``."""
    return any(count > 0 and layer < last_layer for layer, count in exit_histogram.items())


# --------------------------------------------------------------------------------------------- the bench
def bench(models: Mapping[str, MultiExitClassifier], texts: Sequence[str], labels: Sequence[str],
          text_pairs: Sequence[str] | None = None, *, batch_sizes: Sequence[int] = (32,),
          policies: Sequence[str] = DEFAULT_POLICIES, grid_points: int = 21, timed_points: int = 5,
          repeats: int = 5, warmup: int = 1, device: str | torch.device | None = None,
          data_spec: str | None = None, show_progress: bool = False,
          extra_header: Mapping[str, Any] | None = None, precisions: Sequence[str] = ("fp32",),
          accuracy_budget: float = 1.0, reference: str | None = None) -> BenchResult:
    """Benches every policy of ``policies`` on every model of ``models`` ({name: model}) over labelled texts.

    ``labels`` are label names (each model maps them to its own class ids; an unseen one is a GeepError).
    ``device`` moves every model there first (None: where each already is). Policies that need an exit table are
    skipped, with a logged note and a ``skipped_policies`` entry in the header, on models without one.
    ``precisions`` (``fp32``, ``int8``, ...) are benched side by side, timed in the same rounds: each record has its
    ``precision``, its ``wall_speedup`` over ``full`` at that precision and ``wall_speedup_fp32`` over ``full`` at
    fp32 (when fp32 is benched). ``accuracy_budget`` (points below ``full`` at fp32) places the timed knobs: each
    policy's fastest frontier point within it is timed, with its neighbours (``geep.bench.frontier``).

    ``reference`` (a name in ``models``; default: the first): the model every other is also measured against, so
    static baselines (``geep train --num-layers``) and cascades sit on the same axes as a multi-exit model's
    frontier: each record's ``flops_speedup_ref`` and ``wall_speedup_ref`` are over the reference's ``full`` (at fp32
    where benched), the latter timed in the same interleaved rounds as the record's own points.
    """
    policies = check_policies(policies)
    batch_sizes = [int(b) for b in batch_sizes]
    check_settings(batch_sizes=batch_sizes, grid_points=grid_points, timed_points=timed_points, repeats=repeats,
                   warmup=warmup, accuracy_budget=accuracy_budget)
    if not models:
        raise GeepError("nothing to bench: no model")
    reference = next(iter(models)) if reference is None else reference
    if reference not in models:
        raise GeepError(f"the reference {reference!r} is not one of the benched models: {', '.join(models)}")
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
    precisions = list(dict.fromkeys(precisions))
    if not precisions:
        raise GeepError("nothing to bench: no precision")
    for model in models.values():
        for precision in precisions:  # every precision checked on every model before anything runs
            resolve_run(model, "full", precision=precision)
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
        "precisions": precisions,
        "grid_points": grid_points,
        "timed_points": timed_points,
        "accuracy_budget": accuracy_budget,
        "reference": reference,
        "repeats": repeats,
        "warmup": warmup,
        **dict(extra_header or {}),
        "models": {},
    }
    records: list[dict[str, Any]] = []
    ref_model = models[reference]
    ref = Reference(reference, ref_model, ref_model.tokenize(texts, None if text_pairs is None else list(text_pairs)),
                    "fp32" if "fp32" in precisions else precisions[0])
    for name, model in models.items():
        info, model_records = bench_model(
            model, name, texts, labels, text_pairs, batch_sizes=batch_sizes, policies=policies,
            grid_points=grid_points, timed_points=timed_points, repeats=repeats, warmup=warmup,
            device_name=device_name, show_progress=show_progress, precisions=precisions,
            accuracy_budget=accuracy_budget, reference=None if name == reference else ref)
        header["models"][name] = info
        records.extend(model_records)
    return BenchResult(header, records)


@dataclass(frozen=True)
class Reference:
    """The model every benched model is also measured against: its name, itself, the rows as it tokenises them, and
    the precision of the ``full`` run that is the reference."""

    name: str
    model: Any
    encoded: Any
    precision: str


def model_kind(model: Any) -> str:
    """``cascade``, ``static`` (one exit: a complete model, e.g. ``geep train --num-layers``) or ``multi-exit``."""
    if isinstance(model, Cascade):
        return "cascade"
    return "static" if len(model.exit_layers) == 1 else "multi-exit"


def bench_policies(model: Any, policies: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """The policies benched on ``model`` from the requested ones, and those skipped with the reason. A model runs
    them as named when they apply to its task (the geep ones need an exit table); a model with one exit (a static
    baseline) runs ``full`` alone. A cascade runs ``full`` as its last member alone (the
    reference its speed-ups are over), ``cascade`` (its rule with full members), ``cascade-<p>`` for each dynamic
    policy p when a member has exits of its own, and ``oracle``; not the geep policies (one model's table)."""
    skipped: dict[str, str] = {}
    if not isinstance(model, Cascade) and len(model.exit_layers) == 1:  # a complete model: every policy is full
        return ["full"], {p: "one exit" for p in policies if p != "full"}
    if not isinstance(model, Cascade):
        task = model.config.task
        usable = usable_policies(model)
        for p in policies:
            if p not in usable:
                skipped[p] = f"does not apply to a {task} model"
            elif get_policy(p).needs_table and model.exit_table is None:
                skipped[p] = "no exit table"
        return [p for p in policies if p not in skipped], skipped
    early = any(len(member.exit_layers) > 1 for member in model.members)
    active = ["full", "cascade"]
    usable = policies_for(model.config.task)
    for p in policies:
        policy = get_policy(p)
        if p in ("full", "oracle"):
            continue
        if p not in usable:
            skipped[p] = f"does not apply to a cascade's members ({model.config.task}, no exit module)"
        elif policy.predicts_layers:
            skipped[p] = "predicts layers from one model's exit table"
        elif not early:
            skipped[p] = "no member exits early (the cascade policy is its rule)"
        else:
            active.append(f"cascade-{p}")
    if "oracle" in policies:
        active.append("oracle")
    return active, skipped


def bench_model(model: MultiExitClassifier | Cascade, name: str, texts: list[str], labels: list[str],
                text_pairs: Sequence[str] | None, *, batch_sizes: Sequence[int], policies: Sequence[str],
                grid_points: int, timed_points: int, repeats: int, warmup: int, device_name: str,
                show_progress: bool = False, precisions: Sequence[str] = ("fp32",), accuracy_budget: float = 1.0,
                reference: Reference | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One model's header entry and records (see :func:`bench`). ``reference``: the model this one is also measured
    against (None: this is the reference)."""
    objective = model.config.objective
    task = model.task
    y = label_ids(model, labels)  # (N,) class ids; the task's targets
    active, why_skipped = bench_policies(model, policies)
    not_for_model = [p for p, why in why_skipped.items() if why.startswith("does not apply")]
    skipped = [p for p in why_skipped if p not in not_for_model]
    for why in dict.fromkeys(why_skipped.values()):
        hint = " (build one with `geep build-table`)" if why == "no exit table" else ""
        logger.info("%s: %s, skipping %s%s", name, why, ", ".join(p for p, w in why_skipped.items() if w == why),
                    hint)
    pairs = None if text_pairs is None else list(text_pairs)
    encoded, tokenize_seconds = median_seconds(lambda: model.tokenize(texts, pairs), repeats)
    n = len(texts)
    logger.info("%s (%s): %d rows tokenised in %.3f s; all-exits pass", name, objective, n, tokenize_seconds)
    exit_logits = {}
    with torch.inference_mode():
        for precision in precisions:  # (N, |E|, C) at each precision: int8 confidences differ from fp32's
            exit_logits[precision] = all_exit_logits(model, encoded, batch_size=max(batch_sizes),
                                                     show_progress=show_progress, precision=precision).logits
    records: list[dict[str, Any]] = []
    full_points: dict[str, Any] = {}
    full_flops: dict[int, int] = {}
    ref_full_flops: dict[int, int] = {}
    for batch_size in batch_sizes:
        points = {}
        for precision in precisions:
            result = sweep(model, encoded, y, policies=active, batch_size=batch_size, grid_points=grid_points,
                           exit_logits=exit_logits[precision], precision=precision)
            full_points[precision] = result.full
            points[precision] = result.points
            full_flops[batch_size] = result.full_flops
        own_full = full_points.get("fp32", full_points[precisions[0]])  # the budget is against full at fp32
        walls, ref_run = _time_points(model, name, encoded, y, points, batch_size=batch_size,
                                      timed_points=timed_points, repeats=repeats, warmup=warmup,
                                      show_progress=show_progress, floor=own_full.score - accuracy_budget / 100.0,
                                      reference=reference)
        full_median = {precision: statistics.median(walls[(precision, "full", 0)]) for precision in precisions}
        fp32_median = full_median.get("fp32")
        if reference is None:  # this model is the reference: its own full at the reference precision
            ref_precision = "fp32" if "fp32" in precisions else precisions[0]
            ref_median, ref_flops = full_median[ref_precision], full_flops[batch_size]
        else:
            ref_median, ref_flops = statistics.median(walls[REF_KEY]), ref_run.flops.total
        ref_full_flops[batch_size] = ref_flops
        for precision in precisions:
            for policy in active:
                needs_labels = policy_for(model, policy).needs_labels
                for i, point in enumerate(points[precision][policy]):
                    runs = walls.get((precision, policy, i))
                    median = None if runs is None else statistics.median(runs)
                    own = policy == "full"
                    knob, continue_threshold = split_knob(point.knob)
                    thresholds = None
                    if isinstance(point.knob, CascadeKnob):  # the oracle's thresholds mean nothing
                        knob = point.knob.inner
                        thresholds = None if needs_labels else list(point.knob.thresholds)
                    records.append({
                        "model": name,
                        "objective": objective,
                        "policy": policy,
                        "knob": knob,
                        "batch_size": batch_size,
                        "accuracy": point.accuracy,
                        "macro_f1": point.macro_f1,
                        "mean_exit_layer": point.mean_exit_layer,
                        "exit_histogram": {str(k): v for k, v in point.exit_histogram.items()},
                        "flops_speedup": point.flops_speedup,
                        "wall_speedup": None if median is None else (1.0 if own else full_median[precision] / median),
                        "samples_per_s": None if median is None else n / median,
                        "wall_seconds": median,
                        "wall_runs": runs,
                        "timed": median is not None,
                        "reporting_only": needs_labels,
                        "device": device_name,
                        "precision": precision,
                        "wall_speedup_fp32": None if median is None or fp32_median is None else (
                            1.0 if own and precision == "fp32" else fp32_median / median),
                        "continue_threshold": continue_threshold,
                        "metric": point.metric,
                        "score": point.score,
                        "flops_speedup_ref": point.flops_speedup * ref_flops / full_flops[batch_size],
                        "wall_speedup_ref": None if median is None else ref_median / median,
                        "reference": name if reference is None else reference.name,
                        "cascade_thresholds": thresholds,
                        "metrics": point.metrics,  # every metric of the task (token: entity F1, token accuracy)
                    })
    first = full_points[precisions[0]]
    info = {
        "objective": objective,
        "num_layers": model.num_layers,
        "exit_layers": list(model.exit_layers),
        "exit_table": model.exit_table is not None,
        "full_accuracy": first.accuracy,
        "full_macro_f1": first.macro_f1,
        "full_accuracy_by_precision": {p: point.score for p, point in full_points.items()},
        "task": task.name,
        "metric": first.metric,
        "full_score": first.score,
        "full_metrics": first.metrics,
        "tokenize_seconds": tokenize_seconds,
        "tokenize_samples_per_s": n / tokenize_seconds if tokenize_seconds > 0 else None,
        "skipped_policies": skipped,
        "policies_not_for_model": not_for_model,
        "skipped_why": why_skipped,
        "kind": model_kind(model),
        "truncated_from": None if isinstance(model, Cascade) else model.config.truncated_from,
        "members": [{"layers": m.num_layers, "exit_layers": list(m.exit_layers), "objective": m.config.objective}
                    for m in model.members] if isinstance(model, Cascade) else None,
        "full_flops": {str(b): f for b, f in full_flops.items()},
        "reference_full_flops": {str(b): f for b, f in ref_full_flops.items()},
        "difficulty_inversion": {precision: difficulty_inversion(model, active, exit_logits[precision], y, precision)
                                 for precision in precisions} if task.name == "classification" else None,
        "calibration_error": {precision: exit_calibration(model, exit_logits[precision], y, precision)
                              for precision in precisions}
        if task.name == "classification" and not isinstance(model, Cascade) else None,
    }
    return info, records


def exit_calibration(model: MultiExitClassifier, exit_logits: torch.Tensor, labels: torch.Tensor,
                     precision: str) -> dict[str, Any]:
    """Each exit's expected calibration error (15 equal-width bins) on the bench rows, of the raw softmax
    (``before``) and, where ``geep calibrate`` stored temperatures at ``precision`` (else fp32), of
    softmax(z_k / T_k) (``after``; None without temperatures), from the all-exits logits (N, |E|, K + S)."""
    scores = exit_logits[..., : model.config.num_outputs].cpu()  # (N, |E|, C)
    temperatures = model.config.stored_temperatures(precision)
    return {"exits": list(model.exit_layers), "temperatures": None if temperatures is None else list(temperatures),
            "before": calibration_errors(scores, labels.cpu()),
            "after": None if temperatures is None else calibration_errors(scores, labels.cpu(), temperatures)}


def difficulty_inversion(model: Any, policies: Sequence[str], exit_logits: torch.Tensor, labels: torch.Tensor,
                         precision: str) -> dict[str, dict[str, float | None]]:
    """CascadeBERT's Difficulty Inversion Score (``geep.evaluation.metrics.difficulty_inversion_score``) of each
    policy that ranks rows by a confidence, at each exit where it decides (every exit it reads but L), from the
    all-exits logits (N, |E|, C): {policy: {str(exit): DIS or None}}. Policies that rank by no confidence (full,
    pabee, geep, oracle) are left out."""
    index = {k: i for i, k in enumerate(model.exit_layers)}
    out: dict[str, dict[str, float | None]] = {}
    for name in policies:
        if name == "full":
            continue
        policy = policy_for(model, name, precision)
        scores: dict[str, float | None] = {}
        for k in policy.exits(model.exit_layers, model.num_layers):
            if k == model.num_layers:
                continue
            logits = exit_logits[:, index[k]]
            confidence = policy.confidence_at(k, logits)
            if confidence is None:
                continue
            scores[str(k)] = difficulty_inversion_score(confidence, logits.argmax(-1) != labels)
        if scores:
            out[name] = scores
    return out


REF_KEY = ("reference", "full", 0)  # the reference model's full run, timed in another model's rounds


def _time_points(model: MultiExitClassifier | Cascade, name: str, encoded: dict, labels: torch.Tensor,
                 points: Mapping[str, Mapping[str, Sequence[Any]]], *, batch_size: int, timed_points: int,
                 repeats: int, warmup: int, show_progress: bool, floor: float, reference: Reference | None = None
                 ) -> tuple[dict[tuple[str, str, int], list[float]], Any]:
    """Every timed run's wall seconds of the timed points ({precision: {policy: scored grid}}), keyed by
    (precision, policy, index into its grid): every precision's points in the same interleaved rounds. The knobs
    are :func:`geep.bench.frontier.frontier_knobs` of each grid around ``floor`` (an accuracy in [0, 1]). With a
    ``reference``, its ``full`` runs in the same rounds too (key :data:`REF_KEY`); its run's output is returned
    beside the seconds (None without one). A cascade's ``full`` is its last member run alone."""
    keys: list[tuple[str, str, int]] = []
    runs: list[Callable[[], Any]] = []
    if reference is not None:
        ref_spec = resolve_run(reference.model, "full", precision=reference.precision, batch_size=batch_size)
        keys.append(REF_KEY)
        runs.append(lambda: run_spec(reference.model, ref_spec, reference.encoded))
    for precision, per_policy in points.items():
        for policy, scored in per_policy.items():
            def timeable(i: int, policy: str = policy, scored: Sequence[Any] = scored) -> bool:
                return policy == "full" or exits_early(scored[i].exit_histogram, model.num_layers)  # see above

            for i in frontier_knobs(scored, timed_points, floor, timeable):
                runner = model.members[-1] if isinstance(model, Cascade) and policy == "full" else model
                spec = resolve_run(runner, policy, scored[i].knob, precision=precision, batch_size=batch_size)
                run_labels = labels if spec.policy.needs_labels else None
                keys.append((precision, policy, i))
                runs.append(lambda spec=spec, y=run_labels, m=runner: run_spec(m, spec, encoded, labels=y))
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
    ref_run = None
    for key, out in zip(keys, outputs):
        if key == REF_KEY:
            ref_run = out
            continue
        precision, policy, i = key
        _check_against_sweep(f"{name} {precision}", policy, points[precision][policy][i], out, labels, batch_size,
                             model.num_layers, model.task)
    return dict(zip(keys, seconds)), ref_run


def _check_against_sweep(name: str, policy: str, point: Any, run: Any, labels: torch.Tensor, batch_size: int,
                         num_layers: int, task: Task) -> None:
    """Logs a warning when a timed run disagrees with the sweep's replay of the same knob (beyond one row's
    worth, which a decision exactly at the threshold can flip by float noise; a correlation by more than 0.01)."""
    n = len(labels)
    score = task.score(run.predictions, labels)
    mean_layer = float(run.exit_layer.float().mean())
    if abs(score - point.score) > max(1.5 / n, 0.0 if task.name != "regression" else 0.01) \
            or abs(mean_layer - point.mean_exit_layer) > 1.5 * (num_layers - 1) / n:
        logger.warning("%s, batch %d: %s at knob %s ran at %s %.4f, mean layer %.3f; the sweep replayed "
                       "%.4f, %.3f", name, batch_size, policy, point.knob, point.metric, score, mean_layer, point.score,
                       point.mean_exit_layer)


# ---------------------------------------------------------------------------------------------- provenance
