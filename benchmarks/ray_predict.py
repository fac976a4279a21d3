"""Issue 13's measurement: `geep predict --ray` on this machine against one process, and Ray's fixed costs.

On the rows of `--data` written to one CSV file (id, text), with the same model, policy and knob:

1. one process, `--threads 2` (all the machine's cores): the model's labelling time, in process;
2. Ray Data, 2 actors x 1 thread: the whole job (local Ray start, actors loading the model, reading, labelling,
   writing parquet shards and the manifest), end to end;
3. Ray's fixed cost: the same job on 8 rows (start-up, actor start, the write), and its per-batch cost: the whole
   job at two `--map-batch-size`s, the difference in time over the difference in batch count.

Each Ray job runs in a fresh process (`geep predict --ray`), as a user runs it. One run each: a shared machine, so
the figures are for scale; the ratio (1) vs (2) minus (3) is the comparison.

    python benchmarks/ray_predict.py --model runs/demo-smoke/geep --data tweets:test --output benchmarks/results/ray
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def in_process_seconds(model_dir: str, texts: list[str], policy: str, threads: int) -> float:
    """Seconds to label ``texts`` in this process with ``threads`` torch threads, model already loaded."""
    import torch

    from geep.inference import predict
    from geep.modeling import MultiExitClassifier

    torch.set_num_threads(threads)
    model = MultiExitClassifier.from_pretrained(model_dir)
    predict(model, texts[:64], policy=policy)  # warm-up
    start = time.perf_counter()
    predict(model, texts, policy=policy)
    return time.perf_counter() - start


def ray_job(model_dir: str, input_path: Path, output: Path, policy: str, concurrency: int, threads: int,
            map_batch_size: int) -> dict:
    """`geep predict --ray` in a fresh process; its manifest plus the wall seconds of the whole command."""
    cmd = [sys.executable, "-m", "geep.cli.main", "predict", "--ray", "--model", model_dir, "--input", str(input_path),
           "--output", str(output), "--policy", policy, "--concurrency", str(concurrency), "--threads", str(threads),
           "--map-batch-size", str(map_batch_size), "--overwrite", "--no-progress"]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env={**os.environ, "RAY_ADDRESS": ""})
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    manifest = json.loads((output / "_manifest.json").read_text())
    return {**manifest, "command_seconds": seconds}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--data", default="tweets:test")
    p.add_argument("--policy", default="full")
    p.add_argument("--output", required=True)
    args = p.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    from geep.data import get_columns, load_dataset_spec

    cols = get_columns(load_dataset_spec(args.data), "text", None, None, source=args.data, require_labels=False)
    texts = cols.texts
    work = Path(tempfile.mkdtemp(prefix="geep-ray-bench-"))
    for name, rows in (("all", texts), ("tiny", texts[:8])):
        (work / name).mkdir()
        with open(work / name / "rows.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["id", "text"])
            writer.writerows((f"{i:06d}", t) for i, t in enumerate(rows))

    n = len(texts)
    single = in_process_seconds(args.model, texts, args.policy, threads=2)
    full = ray_job(args.model, work / "all", work / "out-all", args.policy, 2, 1, 1024)
    tiny = ray_job(args.model, work / "tiny", work / "out-tiny", args.policy, 2, 1, 1024)
    small_batches = ray_job(args.model, work / "all", work / "out-256", args.policy, 2, 1, 256)
    batches = (-(-n // 1024), -(-n // 256))
    per_batch = (small_batches["command_seconds"] - full["command_seconds"]) / (batches[1] - batches[0])
    steady = full["command_seconds"] - tiny["command_seconds"]
    result = {
        "data": args.data, "rows": n, "policy": args.policy, "model": args.model,
        "single_process_2_threads_seconds": single, "single_process_rows_per_s": n / single,
        "ray_2x1_job_seconds": full["command_seconds"], "ray_2x1_rows_per_s_end_to_end": n / full["command_seconds"],
        "ray_fixed_cost_seconds": tiny["command_seconds"],
        "ray_2x1_rows_per_s_after_fixed_cost": n / steady if steady > 0 else None,
        "ray_per_batch_seconds": per_batch, "ray_rows_per_actor": full["rows_per_actor"],
        "batches_1024_vs_256": batches, "ray_256_job_seconds": small_batches["command_seconds"],
    }
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ray_predict.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
