"""Issue 21's targets: early exit for regression and the new exit rules (lte, elbert, vote) beside fastbert.

For each trained model (``runs/tasks/train_all.sh`` trains them; sizes in BENCHMARKS.md "Tasks") this runs the bench
(``geep.bench.bench``: every knob's score and FLOPs from one all-exits pass replayed by the one scheduler; wall-clock
along each policy's FLOPs frontier, medians of interleaved runs against ``full`` in the same rounds) on the packaged
test split, writes ``bench.json``/``report.md``/``curves.png`` under ``--output/NAME``, and then reads the targets:

- ``lee`` (regression, document pairs): ``lte`` at >= 1.5x wall speed-up over ``full`` within 0.01 Pearson of full
  (the bench's budget point at ``--accuracy-budget 1``: one point of Pearson x 100).
- ``bbc``, ``tweets`` (classification): ``fastbert``, ``lte``, ``elbert`` and ``vote`` at their budget points (the
  fastest frontier point within 1 accuracy point of full), and whether the learned certainty ranks rows better than
  entropy, two ways on the same recorded outputs:
  * AUROC of each exit's certainty (lte: sigmoid of the module's signal; entropy: 1 - H(p_k) / ln C) for "exit k's
    answer is right", averaged over the exits before the last;
  * the oracle-normalised area under the accuracy-FLOPs frontier: with c = 1 / FLOPs speed-up (the fraction of
    full's arithmetic), A(c) = the best accuracy of the policy's grid at cost <= c, integrated over c from the cost
    of sending every row out at the first exit to 1; 0 is no better than sending every row out at the first exit
    (a constant at that accuracy), 1 is the oracle (its accuracy from its cost on).

Results: ``--output/tasks.json`` and a markdown summary ``--output/tasks.md`` (BENCHMARKS.md quotes it).

    PYTHONPATH=src python benchmarks/tasks.py --model lee=runs/tasks/lee --model bbc=runs/tasks/bbc \
        --model tweets=runs/tasks/tweets --output benchmarks/results/tasks
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch
from sklearn.metrics import roc_auc_score

from geep.bench import bench, summary_rows, write_outputs
from geep.data import stratified_subset
from geep.data.packaged import load_packaged
from geep.evaluation.metrics import score_of
from geep.inference import all_exit_logits, label_ids
from geep.modeling import MultiExitClassifier
from geep.policies import entropy

POLICIES = {"regression": ["full", "pabee", "lte", "geep-verify"],
            "classification": ["full", "fastbert", "lte", "elbert", "vote", "oracle"]}
GRID = 1000  # points the frontier areas are integrated on
SEED = 0  # of the --max-rows subsets


def frontier_area(points: list[dict], lo: float, first: float, oracle: tuple[float, float]) -> float:
    """The oracle-normalised area under the accuracy-FLOPs frontier of ``points`` (records of one policy), see the
    module docstring. ``lo``: the cost of every row at the first exit; ``first``: that accuracy; ``oracle``: (cost,
    accuracy) of the oracle."""
    pts = [(1.0 / p["flops_speedup"], score_of(p)) for p in points]
    grid = [lo + (1 - lo) * i / (GRID - 1) for i in range(GRID)]

    def best(c: float) -> float:
        reachable = [a for cost, a in pts if cost <= c + 1e-12]
        return max(reachable) if reachable else first

    area = sum(best(c) for c in grid) / GRID
    oracle_area = sum(oracle[1] if c >= oracle[0] else first for c in grid) / GRID
    return (area - first) / (oracle_area - first) if oracle_area > first else float("nan")


def ranking(model: MultiExitClassifier, texts: list[str], labels: list) -> dict[str, float]:
    """Mean AUROC over the exits before the last of the lte certainty and of 1 - normalised entropy for "this exit's
    answer is right"."""
    outputs = all_exit_logits(model, texts, batch_size=32).logits  # (N, E, C + 1)
    y = label_ids(model, labels)
    C = model.config.num_outputs
    aucs = {"lte": [], "entropy": []}
    for k in range(outputs.shape[1] - 1):
        logits = outputs[:, k, :C]
        right = (logits.argmax(-1) == y).numpy()
        if right.all() or not right.any():
            continue
        aucs["lte"].append(roc_auc_score(right, torch.sigmoid(outputs[:, k, C]).numpy()))
        aucs["entropy"].append(roc_auc_score(right, (1 - entropy(logits) / math.log(C)).numpy()))
    return {name: sum(v) / len(v) for name, v in aucs.items() if v} | {"exits_scored": len(aucs["lte"])}


def run(name: str, directory: str, output: Path, repeats: int, timed_points: int, max_rows: int | None) -> dict:
    model = MultiExitClassifier.from_pretrained(directory)
    task = model.config.task
    data = load_packaged(name, "test")
    texts = list(data["text"])
    pairs = list(data["text_pair"]) if "text_pair" in data.column_names else None
    labels = list(data["label"])
    if max_rows is not None and max_rows < len(texts):  # a seeded stratified subset (SEED), for the machine's time
        keep = stratified_subset(model.task.strata(model.task.read_labels(labels, name)), max_rows, SEED)
        texts, labels = [texts[i] for i in keep], [labels[i] for i in keep]
        pairs = None if pairs is None else [pairs[i] for i in keep]
    result = bench({name: model}, texts, labels, pairs, batch_sizes=[32], policies=POLICIES[task], grid_points=21,
                   timed_points=timed_points, repeats=repeats, warmup=1, data_spec=f"{name}:test",
                   accuracy_budget=1.0, extra_header={"model_dirs": {name: directory}})
    write_outputs(result, output / name)
    rows = {row["policy"]: row for row in summary_rows(result, 1.0)}
    full = rows["full"]["full"]
    out = {"task": task, "n": len(texts), "metric": full["metric"], "full_score": full["score"], "policies": {}}
    for policy, row in rows.items():
        best = row["best"]
        out["policies"][policy] = None if best is None else {
            "knob": best["knob"], "score": best["score"], "drop_points": 100 * (full["score"] - best["score"]),
            "flops_speedup": best["flops_speedup"], "wall_speedup": best["wall_speedup"],
            "mean_exit_layer": best["mean_exit_layer"]}
    if task == "regression":
        lte = out["policies"].get("lte")
        out["target"] = {"what": "lte >= 1.5x wall within 0.01 Pearson of full",
                         "met": bool(lte and lte["wall_speedup"] and lte["wall_speedup"] >= 1.5
                                     and lte["drop_points"] <= 1.0 + 1e-9)}
    else:
        by = {p: [r for r in result.records if r["policy"] == p] for p in POLICIES[task]}
        everything = [r for p in ("fastbert", "lte", "elbert", "vote") for r in by[p]]
        lo = min(1.0 / r["flops_speedup"] for r in everything)
        first = max((score_of(r) for r in everything if abs(1.0 / r["flops_speedup"] - lo) < 1e-9))
        oracle = by["oracle"][0]
        out["frontier_area"] = {p: frontier_area(by[p], lo, first, (1.0 / oracle["flops_speedup"], score_of(oracle)))
                                for p in ("fastbert", "lte", "elbert", "vote")}
        out["auroc"] = ranking(model, texts, labels)
    return out


def markdown(results: dict[str, dict]) -> str:
    lines = ["| set | task | policy | knob | score (full) | drop (points) | FLOPs speed-up | wall speed-up |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        for policy, p in r["policies"].items():
            if policy == "full":
                continue
            if p is None:
                lines.append(f"| {name} | {r['task']} | {policy} | - | none within 1 point | | | |")
                continue
            wall = "-" if p["wall_speedup"] is None else f"{p['wall_speedup']:.2f}x"
            lines.append(f"| {name} | {r['task']} | {policy} | {p['knob']} | {100 * p['score']:.2f} "
                         f"({100 * r['full_score']:.2f} {r['metric']}) | {p['drop_points']:.2f} | "
                         f"{p['flops_speedup']:.2f}x | {wall} |")
    for name, r in results.items():
        if "frontier_area" in r:
            areas = ", ".join(f"{p} {v:.3f}" for p, v in r["frontier_area"].items())
            lines.append(f"\n- {name}: oracle-normalised frontier area {areas}; mean AUROC of right/wrong per exit: "
                         f"lte {r['auroc'].get('lte', float('nan')):.3f}, entropy "
                         f"{r['auroc'].get('entropy', float('nan')):.3f} ({r['auroc']['exits_scored']} exits)")
        if "target" in r:
            lines.append(f"\n- {name}: {r['target']['what']}: {'met' if r['target']['met'] else 'not met'}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", action="append", required=True, metavar="SET=DIR",
                   help="a packaged set (lee, bbc, tweets) and the model trained on it")
    p.add_argument("--output", required=True)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--timed-points", type=int, default=3)
    p.add_argument("--max-rows", action="append", default=[], metavar="SET=N",
                   help="bench a seeded stratified subset of N test rows of SET")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    results = {}
    max_rows = {name: int(n) for name, _, n in (item.partition("=") for item in args.max_rows)}
    for item in args.model:
        name, _, directory = item.partition("=")
        results[name] = run(name, directory, output, args.repeats, args.timed_points, max_rows.get(name))
        results[name]["bench_rows"] = max_rows.get(name)
        (output / "tasks.json").write_text(json.dumps(results, indent=1) + "\n")
        print(markdown({name: results[name]}), flush=True)
    (output / "tasks.md").write_text(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
