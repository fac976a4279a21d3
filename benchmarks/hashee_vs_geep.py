"""HashEE against GEEP's policies at equal FLOPs, on a packaged data set (issue 27, item 3's target).

Trains two models on the same seeded subset of ``DATA:train`` with the same epochs (``geep train``): one with the
``geep`` objective (its exit table from the rows train holds out) and one with ``--objective hashee``; then, on
``DATA:test``, scores HashEE (policy ``hashee``: one point, no knob) and every knob of ``fastbert``, ``geep`` and
``geep-verify`` on the GEEP model (one all-exits pass, replayed by the real scheduler: ``geep.evaluation.sweep``).
FLOPs speed-ups are each model's against its own ``full``; both are the same encoder with one attention head at L,
so ``full`` costs the same. For each GEEP policy it prints the most accurate knob at least as fast as HashEE.

    python benchmarks/hashee_vs_geep.py --data bbc --train-rows 300 --epochs 1 --work runs/hashee-bench
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from geep.data import load_dataset_spec
from geep.evaluation.sweep import sweep
from geep.inference import label_ids, run_policy
from geep.modeling import MultiExitClassifier


def train(work: Path, name: str, data: str, rows: int, epochs: int, extra: list[str]) -> tuple[Path, float]:
    out = work / name
    argv = [sys.executable, "-m", "geep.cli.main", "train", "--model", "minilm", "--train", f"{data}:train",
            "--max-train-samples", str(rows), "--epochs", str(epochs), "--distil-epochs", "0", "--no-progress",
            "--device", "cpu", "--output", str(out), "--overwrite", *extra]
    started = time.perf_counter()
    subprocess.run(argv, check=True)
    return out, time.perf_counter() - started


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="bbc")
    p.add_argument("--train-rows", type=int, default=300)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--hash", default="frequency", choices=["frequency", "random"])
    p.add_argument("--test-rows", type=int, default=None, help="the first N test rows (default: all)")
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--reuse", action="store_true", help="score the models already trained in --work")
    args = p.parse_args()
    torch.set_num_threads(2)

    if args.reuse:
        (geep_dir, geep_s), (hashee_dir, hashee_s) = (args.work / "geep", 0.0), (args.work / "hashee", 0.0)
    else:
        geep_dir, geep_s = train(args.work, "geep", args.data, args.train_rows, args.epochs, [])
        hashee_dir, hashee_s = train(args.work, "hashee", args.data, args.train_rows, args.epochs,
                                     ["--objective", "hashee", "--hash", args.hash])
    test = load_dataset_spec(f"{args.data}:test")
    texts, labels = list(test["text"]), list(test["label"])
    if args.test_rows is not None:
        texts, labels = texts[:args.test_rows], labels[:args.test_rows]

    hashee = MultiExitClassifier.from_pretrained(hashee_dir)
    encoded = hashee.tokenize(texts)
    ids = label_ids(hashee, labels)
    full = run_policy(hashee, encoded, "full", batch_size=32)
    halted = run_policy(hashee, encoded, "hashee", batch_size=32)
    hashee_point = {"accuracy": float((halted.label_ids == ids).float().mean()),
                    "full_accuracy": float((full.label_ids == ids).float().mean()),
                    "flops_speedup": full.flops.total / halted.flops.total}

    model = MultiExitClassifier.from_pretrained(geep_dir)
    encoded = model.tokenize(texts)
    result = sweep(model, encoded, label_ids(model, labels), policies=["fastbert", "geep", "geep-verify"])
    report = {"data": args.data, "train_rows": args.train_rows, "epochs": args.epochs, "test_rows": len(texts),
              "hash": args.hash, "train_seconds": {"geep": round(geep_s, 1), "hashee": round(hashee_s, 1)},
              "hashee": hashee_point,
              "geep_full": {"accuracy": result.full.accuracy, "flops_speedup": 1.0}, "geep_policies": {}}
    def point(pt):
        return None if pt is None else {"knob": str(pt.knob), "accuracy": pt.accuracy,
                                        "flops_speedup": pt.flops_speedup, "mean_exit_layer": pt.mean_exit_layer}

    for name, points in result.points.items():
        faster = [pt for pt in points if pt.flops_speedup >= hashee_point["flops_speedup"]]
        as_good = [pt for pt in points if pt.accuracy >= hashee_point["accuracy"]]
        report["geep_policies"][name] = {
            "most_accurate_at_least_as_fast": point(max(faster, key=lambda pt: pt.accuracy, default=None)),
            "fastest_at_least_as_accurate": point(max(as_good, key=lambda pt: pt.flops_speedup, default=None)),
            "frontier": sorted({(round(pt.flops_speedup, 2), round(pt.accuracy, 4)) for pt in points})}
    print(json.dumps(report, indent=2))
    (args.work / "report.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
