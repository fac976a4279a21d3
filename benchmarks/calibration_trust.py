"""How often does the knob `geep calibrate --max-accuracy-drop 1` stores break its budget on unseen rows?

Issue 20, item 1. For each model (trained with `geep train`, see BENCHMARKS.md for the commands), every exit's logits
are recorded ONCE on every held-out row (the packaged dev and test splits together: bbc's dev split alone has 213
rows). Then, for each dev-subset size and seed, a dev subset is drawn from those rows and scored by replay
(`geep.evaluation.sweep(..., exit_logits=...)`: the real scheduler on recorded logits, as `geep calibrate` scores
them); each rule chooses each policy's knob and the default policy on the subset, and the chosen knob is evaluated
on the rows NOT drawn: its accuracy there against full's there. A knob "breaks" when that drop exceeds the budget.

Rules compared (all read the same sweep; all but `point` use fixed-sequence testing from the slowest knob):
- point:     the point estimate, the rule before issue 20 (`choose_knob(..., confidence=None)`);
- cp:        Clopper-Pearson on the discordant rows, (2 p_u - 1) n_d / n (`bounds.conditional_drop_bound`; the
             rule first shipped, replaced by `score` after this measurement);
- bootstrap: the 90% quantile of the paired mean drop over 2000 resamples of the dev rows;
- exact:     a bound that also counts the sampling of the disagreement rate: the Clopper-Pearson bound on the
             share of rows lost, lost / n, ignoring rows gained (the drop is at most that share);
- cp-nofst, score-nofst: the bound, but the fastest knob that passes on its own (no fixed sequence): what the
             multiple-comparison correction buys;
- score:     Tango's score bound on the paired difference (Tango 1998), which estimates the disagreement rate too,
             each policy at the full confidence (`choose_knob`);
- score-split: the score bound with the confidence split over the P calibrated policies (each at 1 - 0.1 / P,
             Bonferroni), so that the default policy, the fastest of those that passed, holds at 0.9 too: the shipped rule
             (`geep calibrate`).
The default policy is chosen by `choose_policy` from each rule's choices.

Per-row results do not depend on the batch (replay is batch invariant), so each (policy, knob)'s per-row answers on
all held-out rows are computed once (cached) and the rows not drawn are read from them.

    PYTHONPATH=src .venv/bin/python benchmarks/calibration_trust.py --model runs/bbc-geep --data bbc \\
        --output benchmarks/results/calibration/bbc.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from geep.data.packaged import load_packaged
from geep.evaluation import choose_knob, choose_policy, replay, sweep
from geep.evaluation.calibrate import calibrated_policies
from geep.evaluation.bounds import clopper_pearson_upper, conditional_drop_bound, fixed_sequence, score_upper_bound
from geep.evaluation.sweep import KnobPoint, slowest_first
from geep.inference import all_exit_logits, label_ids
from geep.modeling import MultiExitClassifier

RULES = ("point", "cp", "score", "bootstrap", "exact", "cp-nofst", "score-nofst", "score-split")
BOOTSTRAP_SAMPLES = 2000
MEASURED_POLICIES = ("fastbert", "deebert", "confidence", "pabee", "geep", "geep-verify")


def bootstrap_bound(p: KnobPoint, confidence: float, rng: np.random.Generator) -> float:
    """The ``confidence`` quantile of the paired mean drop (points) over resamples of the dev rows: a resample's
    (lost, gained, rest) counts are multinomial with the observed shares."""
    if p.lost + p.gained == 0:
        return 0.0
    n = p.rows
    draws = rng.multinomial(n, [p.lost / n, p.gained / n, 1 - (p.lost + p.gained) / n], size=BOOTSTRAP_SAMPLES)
    return float(np.quantile(100.0 * (draws[:, 0] - draws[:, 1]) / n, confidence))


def exact_bound(p: KnobPoint, confidence: float) -> float:
    """Clopper-Pearson upper bound on lost / n, in points: the drop q_lost - q_gained is at most q_lost."""
    return 100.0 * clopper_pearson_upper(p.lost, p.rows, confidence)


def choose_with(points: list[KnobPoint], bound, budget: float, confidence: float, sequence: bool = True) -> KnobPoint:
    """choose_knob's max-accuracy-drop rule with another bound (``bound(point) -> points``)."""
    ordered = slowest_first(points)
    bounds = [bound(p) for p in ordered]
    if sequence:
        passed = list(zip(ordered[:fixed_sequence(bounds, budget)], bounds))
    else:
        passed = [(p, b) for p, b in zip(ordered, bounds) if b <= budget + 1e-12]
    faster = [(p, b) for p, b in passed if p.flops_speedup > 1.0]
    if faster:
        p, b = max(faster, key=lambda pb: (pb[0].flops_speedup, -pb[1]))
        return replace(p, confidence=confidence, drop_bound=b, promised=True)
    candidates = [(p, b) for p, b in zip(ordered, bounds) if p.flops_speedup > 1.0] or list(zip(ordered, bounds))
    p, b = min(candidates, key=lambda pb: (pb[1], -pb[0].flops_speedup))
    return replace(p, confidence=confidence, drop_bound=b, promised=False)


def choose(rule: str, points: list[KnobPoint], full_accuracy: float, budget: float, confidence: float,
           rng: np.random.Generator, n_policies: int) -> KnobPoint:
    if rule == "point":
        return choose_knob(points, full_accuracy, max_accuracy_drop=budget, confidence=None)
    if rule == "cp":
        return choose_with(points, lambda p: 100.0 * conditional_drop_bound(p.lost, p.gained, p.rows, confidence),
                           budget, confidence)
    if rule == "bootstrap":
        return choose_with(points, lambda p: bootstrap_bound(p, confidence, rng), budget, confidence)
    if rule == "exact":
        return choose_with(points, lambda p: exact_bound(p, confidence), budget, confidence)
    if rule == "score":  # the shipped rule
        return choose_knob(points, full_accuracy, max_accuracy_drop=budget, confidence=confidence)
    if rule == "score-nofst":
        return choose_with(points, lambda p: 100.0 * score_upper_bound(p.lost, p.gained, p.rows, confidence), budget,
                           confidence, sequence=False)
    if rule == "score-split":
        each = 1 - (1 - confidence) / n_policies
        return choose_with(points, lambda p: 100.0 * score_upper_bound(p.lost, p.gained, p.rows, each), budget,
                           confidence)
    if rule == "cp-nofst":
        return choose_with(points, lambda p: 100.0 * conditional_drop_bound(p.lost, p.gained, p.rows, confidence),
                           budget, confidence, sequence=False)
    raise ValueError(rule)


def knob_key(policy: str, knob) -> str:
    return f"{policy}:{tuple(knob) if isinstance(knob, tuple) else knob}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True, help="a packaged set: its dev and test splits are pooled")
    ap.add_argument("--sizes", default="100,200,500,1000")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--budget", type=float, default=1.0, help="points")
    ap.add_argument("--confidence", type=float, default=0.9)
    ap.add_argument("--grid-points", type=int, default=41)
    ap.add_argument("--min-test-rows", type=int, default=200, help="a size leaving fewer held-out rows is skipped")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--output", required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    started = time.time()

    model = MultiExitClassifier.from_pretrained(args.model)
    texts, labels = [], []
    for split in ("dev", "test"):
        rows = load_packaged(args.data, split)
        texts += rows["text"]
        labels += rows["label"]
    encoded = model.tokenize(texts)
    y = label_ids(model, labels)
    N = len(texts)
    cache = Path(args.model) / f"calibration_trust_logits_{args.data}.safetensors"
    if cache.is_file() and load_file(cache)["logits"].shape[0] == N:
        logits = load_file(cache)["logits"]
    else:
        t0 = time.time()
        with torch.inference_mode():
            logits = all_exit_logits(model, encoded, batch_size=32).logits
        save_file({"logits": logits.contiguous()}, cache)
        print(f"recorded every exit's logits on {N} rows in {time.time() - t0:.0f} s", flush=True)

    # the six policies of the first run (tweets, before the survey's policies were registered), so that runs compare
    policies = [p for p in calibrated_policies(model) if p in MEASURED_POLICIES]
    right_of: dict[str, torch.Tensor] = {}  # knob key -> (N,) bool: the knob's answer is right, on every row

    def right(policy: str, knob) -> torch.Tensor:
        key = knob_key(policy, knob)
        if key not in right_of:
            probabilities, _, _ = replay(model, logits, encoded, policy, knob, batch_size=32)
            right_of[key] = probabilities.argmax(-1) == y
        return right_of[key]

    full_right = right("full", None)
    # The build threshold S on the packaged dev split (the first rows of the pool): the point rule at 0 points (what
    # auto_build_threshold uses) against the bound at the same budget.
    n_dev = len(load_packaged(args.data, "dev"))
    dev_rows = list(range(n_dev))
    dev_sweep = sweep(model, {k: [v[i] for i in dev_rows] for k, v in encoded.items()}, y[:n_dev],
                      policies=["fastbert"], batch_size=32, grid_points=41, exit_logits=logits[:n_dev])
    build_threshold = {}
    for name, confidence in (("point", None), ("bound", args.confidence)):
        p = choose_knob(dev_sweep.points["fastbert"], dev_sweep.full.accuracy, max_accuracy_drop=0.0,
                        confidence=confidence)
        build_threshold[name] = {"S": p.knob, "dev_speedup": p.flops_speedup, "mean_exit_layer": p.mean_exit_layer,
                                 "lost": p.lost, "gained": p.gained, "promised": p.promised}
    print(f"build threshold S on {n_dev} dev rows: {build_threshold}", flush=True)
    sizes = [int(s) for s in args.sizes.split(",") if N - int(s) >= args.min_test_rows]
    records = []
    for size in sizes:
        for seed in range(args.seeds):
            t0 = time.time()
            g = torch.Generator().manual_seed(1000 * size + seed)
            perm = torch.randperm(N, generator=g)
            dev, test = perm[:size].sort().values, perm[size:].sort().values
            dev_encoded = {k: [v[i] for i in dev.tolist()] for k, v in encoded.items()}
            result = sweep(model, dev_encoded, y[dev], policies=policies, batch_size=32,
                           grid_points=args.grid_points, exit_logits=logits[dev])
            full_test = float(full_right[test].double().mean())
            rng = np.random.default_rng(seed)
            for rule in RULES:
                chosen = {name: choose(rule, result.points[name], result.full.accuracy, args.budget,
                                       args.confidence, rng, len(policies)) for name in policies}
                default = choose_policy(chosen, max_accuracy_drop=args.budget)
                for name in [*policies, "default"]:
                    policy = default if name == "default" else name
                    point = None if policy == "full" else chosen[policy]
                    knob = None if point is None else point.knob
                    test_accuracy = float(right(policy, knob)[test].double().mean())
                    records.append({
                        "size": size, "seed": seed, "rule": rule, "policy": name, "ran": policy,
                        "knob": list(knob) if isinstance(knob, tuple) else knob,
                        "dev_drop": 0.0 if point is None else 100 * (result.full.accuracy - point.accuracy),
                        "bound": None if point is None else point.drop_bound,
                        # the default policy fell back to full: nothing was promised
                        "promised": False if point is None else point.promised,
                        "dev_speedup": 1.0 if point is None else point.flops_speedup,
                        "test_drop": 100 * (full_test - test_accuracy), "test_rows": len(test),
                        "broke": 100 * (full_test - test_accuracy) > args.budget + 1e-9})
            print(f"{args.data} size {size} seed {seed}: {time.time() - t0:.0f} s", flush=True)
    out = {"model": args.model, "data": args.data, "pooled_rows": N, "budget": args.budget,
           "confidence": args.confidence, "grid_points": args.grid_points, "sizes": sizes, "seeds": args.seeds,
           "policies": policies, "rules": list(RULES), "build_threshold": build_threshold,
           "seconds": time.time() - started,
           "python": sys.version.split()[0], "machine": platform.machine(), "records": records}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(out, indent=1) + "\n")
    print(summary(out))


def summary(out: dict) -> str:
    """A markdown table: per size, rule and policy, breaks out of seeds, mean test drop, dev speed-up, unpromised."""
    lines = [f"### {out['data']}: {out['pooled_rows']} held-out rows (dev + test pooled), budget {out['budget']:g} "
             f"points, confidence {out['confidence']:g}, {out['seeds']} seeds", "",
             "| dev rows | policy | rule | breaks | mean test drop | worst test drop | mean dev FLOPs x | not promised "
             "(default: full) |",
             "|---:|---|---|---:|---:|---:|---:|---:|"]
    recs = out["records"]
    for size in out["sizes"]:
        for policy in ["fastbert", "geep-verify", "default"]:
            for rule in out["rules"]:
                rs = [r for r in recs if r["size"] == size and r["policy"] == policy and r["rule"] == rule]
                if not rs:
                    continue
                drops = [r["test_drop"] for r in rs]
                lines.append(f"| {size} | {policy} | {rule} | {sum(r['broke'] for r in rs)}/{len(rs)} | "
                             f"{np.mean(drops):.2f} | {max(drops):.2f} | "
                             f"{np.mean([r['dev_speedup'] for r in rs]):.2f} | "
                             f"{sum(not r['promised'] for r in rs)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--summary":
        for path in sys.argv[2:]:
            print(summary(json.loads(Path(path).read_text())) + "\n")
    else:
        main()
