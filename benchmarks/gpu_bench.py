"""Issue 12, item 6: the GPU bench, one command on a machine with only torch, transformers, tokenizers, safetensors.

Run it as ``benchmarks/gpu.sh`` (it sets PYTHONPATH to this checkout's ``src``; nothing is installed). It reads the
pack ``benchmarks/gpu-pack/`` made on a development machine by ``benchmarks/gpu_pack.py`` (the packaged MiniLM as
fp16 safetensors, the bbc and tweets rows as JSON lines: under 60 MB), then for each data set:

1. trains a GEEP model on the GPU (``geep.training.train``: ``--epochs`` epochs, bf16 autocast where the GPU has
   it), holding out 10% of the training rows for the token exit table, whose build threshold S is chosen on dev;
2. calibrates the knobs of ``fastbert``, ``geep`` and ``geep-verify`` on dev at every precision (``--max-drop``
   points of dev accuracy), each from that precision's own all-exits pass;
3. times, on the test split, ``full``, ``fastbert`` shrinking (the published schedule), ``fastbert`` re-batched
   (pooled continuation), ``geep`` and ``geep-verify`` at every precision and batch size: warm-up, then
   ``--repeats`` rounds interleaved over every (precision, policy) of a batch size, ``torch.cuda.synchronize()``
   around each run, medians; FLOPs speed-ups from the counted steps; wall speed-ups over ``full`` at the same
   precision and over ``full`` at fp32; label and exit flips between the first two batch sizes (fp16/bf16 are not
   required to be batch-invariant: their rate is reported).

Writes ``gpu.json`` and ``gpu.md`` into ``--output`` (default ``benchmarks/results/gpu``) with the device's name and
the versions. Budget: under 5 minutes on an H100/H200 (not yet run on one: no GPU was lent when it was written).
Its CPU path is tested with a tiny pack (``tests/test_gpu_bench.py``).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from geep.bench.timing import describe_device, time_interleaved  # noqa: E402
from geep.errors import GeepError  # noqa: E402
from geep.evaluation import calibrate  # noqa: E402
from geep.evaluation.build_table import auto_build_threshold, build_table  # noqa: E402
from geep.inference import label_ids, run_policy  # noqa: E402
from geep.io import write_text_atomic  # noqa: E402
from geep.modeling import MultiExitClassifier  # noqa: E402
from geep.runtime import check_precision, parse_precisions  # noqa: E402
from geep.training import EncodedData, TrainingArguments, train  # noqa: E402

# (name, policy, schedule): what is timed
POINTS = [("full", "full", None), ("fastbert shrinking", "fastbert", "shrink"),
          ("fastbert re-batched", "fastbert", "pooled"), ("geep", "geep", "pooled"),
          ("geep-verify", "geep-verify", "pooled")]
MAX_LENGTH = {"tweets": 64}  # bbc: what the backbone allows, at most 128 (the default)


def read_rows(pack: Path, name: str) -> dict[str, tuple[list[str], list[str]]]:
    """{split: (texts, labels)} of ``pack/name.jsonl``."""
    out: dict[str, tuple[list[str], list[str]]] = {s: ([], []) for s in ("train", "dev", "test")}
    with open(pack / f"{name}.jsonl", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            out[row["split"]][0].append(row["text"])
            out[row["split"]][1].append(row["label"])
    return out


def subset(texts: list[str], labels: list[str], n: int | None, seed: int) -> tuple[list[str], list[str]]:
    if n is None or n >= len(texts):
        return texts, labels
    keep = sorted(random.Random(seed).sample(range(len(texts)), n))
    return [texts[i] for i in keep], [labels[i] for i in keep]


def train_model(pack: Path, name: str, rows: dict, args: argparse.Namespace, device: torch.device
                ) -> tuple[MultiExitClassifier, dict]:
    """A GEEP model trained on ``name``'s training rows (10% held out for the exit table), on ``device``."""
    train_texts, train_labels = subset(*rows["train"], args.max_train, 0)
    dev_texts, dev_labels = subset(*rows["dev"], args.max_dev, 1)
    order = list(range(len(train_texts)))
    random.Random(2).shuffle(order)
    cut = max(1, len(order) // 10)
    table_rows, fit_rows = order[:cut], order[cut:]
    torch.manual_seed(0)
    model = MultiExitClassifier.from_encoder(pack / "minilm", sorted(set(train_labels)), pooling="mean",
                                             max_length=MAX_LENGTH.get(name)).float()  # None: what the backbone allows, at most 128

    def encoded(texts, labels):
        return EncodedData.from_texts(model, texts, None, [model.label_names.index(y) for y in labels])

    start = time.perf_counter()
    result = train(model, encoded([train_texts[i] for i in fit_rows], [train_labels[i] for i in fit_rows]),
                   encoded(dev_texts, dev_labels),
                   TrainingArguments(epochs=args.epochs, distil_epochs=1, batch_size=32, device=str(device),
                                     show_progress_bar=False))
    train_seconds = time.perf_counter() - start
    model.to(device).eval()
    S = auto_build_threshold(model, dev_texts, dev_labels)
    build_table(model, [train_texts[i] for i in table_rows], build_threshold=S, source=f"{name} train (held out)")
    knobs = {}
    for precision in args.precisions:
        chosen = calibrate(model, dev_texts, dev_labels, policies=["fastbert", "geep", "geep-verify"],
                           max_accuracy_drop=args.max_drop, grid_points=args.grid_points, precision=precision)
        knobs[precision] = {policy: point.knob for policy, point in chosen.items()}
    info = {"train_rows": len(fit_rows), "table_rows": len(table_rows), "dev_rows": len(dev_texts),
            "train_seconds": train_seconds, "mixed_precision": result.mixed_precision,
            "dev_accuracy": result.dev_accuracy, "build_threshold": S, "knobs": knobs}
    return model, info


def bench_data(model: MultiExitClassifier, name: str, texts: list[str], labels: list[str], knobs: dict,
               args: argparse.Namespace) -> list[dict]:
    """One record per (batch size, precision, point) on the test rows."""
    encoded = model.tokenize(texts)
    y = label_ids(model, labels)
    sync = torch.cuda.synchronize if model.device.type == "cuda" else None
    records, outputs = [], {}
    for batch_size in args.batch_sizes:
        keys, runs = [], []
        for precision in args.precisions:
            for point, policy, schedule in POINTS:
                knob = None if policy == "full" else knobs[precision][policy]
                keys.append((precision, point, policy, knob))
                runs.append(lambda p=policy, k=knob, s=schedule, pr=precision: run_policy(
                    model, encoded, p, k, batch_size=batch_size, schedule=s, precision=pr))
        with torch.inference_mode():
            outs, seconds = time_interleaved(runs, repeats=args.repeats, warmup=1, sync=sync)
        medians = [statistics.median(s) for s in seconds]
        full = {key[0]: (out, m) for key, out, m in zip(keys, outs, medians) if key[1] == "full"}
        for (precision, point, policy, knob), out, median in zip(keys, outs, medians):
            full_out, full_median = full[precision]
            outputs[(batch_size, precision, point)] = out
            records.append({
                "data": name, "batch_size": batch_size, "precision": precision, "point": point, "policy": policy,
                "knob": knob, "accuracy": float((out.probabilities.argmax(-1) == y).float().mean()),
                "mean_exit_layer": float(out.exit_layer.float().mean()),
                "flops_speedup": full_out.flops.total / max(out.flops.total, 1),
                "wall_speedup": full_median / median,
                "wall_speedup_fp32": full["fp32"][1] / median if "fp32" in full else None,
                "rows_per_s": len(texts) / median, "wall_seconds": median,
            })
    if len(args.batch_sizes) >= 2:  # flips between the first two batch sizes
        a, b = args.batch_sizes[:2]
        for r in records:
            one, two = outputs[(a, r["precision"], r["point"])], outputs[(b, r["precision"], r["point"])]
            r["label_flips"] = float((one.probabilities.argmax(-1) != two.probabilities.argmax(-1)).float().mean())
            r["exit_flips"] = float((one.exit_layer != two.exit_layer).float().mean())
    return records


def render(header: dict, records: list[dict]) -> str:
    lines = ["# GPU bench (`benchmarks/gpu.sh`)", "",
             f"- device: {header['device']}; torch {header['versions']['torch']}, transformers "
             f"{header['versions']['transformers']}; {header['repeats']} interleaved repeats after a warm-up, "
             f"synchronised; wall time {header['seconds']:.0f} s in all", ""]
    for name, info in header["data"].items():
        lines.append(f"- `{name}`: {info['train_rows']} training rows ({info['train_seconds']:.0f} s, "
                     f"{info['mixed_precision']}), {info['table_rows']} table rows at S = {info['build_threshold']:.3g},"
                     f" {info['dev_rows']} dev rows, {info['test_rows']} test rows; knobs (dev, within "
                     f"{header['max_drop']:g} point): {json.dumps(info['knobs'])}")
    flips = "label flips | exit flips |" if any("label_flips" in r for r in records) else ""
    lines += ["", f"Flips: the share of test rows whose label or exit differs between batch "
              f"{' and '.join(map(str, header['batch_sizes'][:2]))}.", "",
              f"| data | batch | precision | point | knob | accuracy | mean layer | FLOPs speed-up | wall vs full | "
              f"wall vs full fp32 | rows/s | {flips}", "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|"
              + ("---:|---:|" if flips else "")]
    for r in records:
        knob = r["knob"]
        knob = "-" if knob is None else "/".join(f"{k:.3g}" for k in knob) if isinstance(knob, (tuple, list)) \
            else f"{knob:.3g}"  # geep-verify's is (tau, t)
        vs32 = "-" if r["wall_speedup_fp32"] is None else f"{r['wall_speedup_fp32']:.2f}x"
        tail = f" {100 * r['label_flips']:.2f}% | {100 * r['exit_flips']:.2f}% |" if "label_flips" in r else ""
        lines.append(f"| {r['data']} | {r['batch_size']} | {r['precision']} | {r['point']} | {knob} | "
                     f"{100 * r['accuracy']:.2f}% | {r['mean_exit_layer']:.2f} | {r['flops_speedup']:.2f}x | "
                     f"{r['wall_speedup']:.2f}x | {vs32} | {r['rows_per_s']:.0f} |{tail}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pack", default=str(ROOT / "benchmarks" / "gpu-pack"))
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "gpu"))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--data", default="bbc,tweets")
    parser.add_argument("--precisions", default="fp32,fp16,bf16")
    parser.add_argument("--batch-sizes", default="32,128")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--grid-points", type=int, default=21)
    parser.add_argument("--max-drop", type=float, default=1.0, help="dev accuracy points the knobs may lose")
    parser.add_argument("--max-train", type=int, default=None)
    parser.add_argument("--max-dev", type=int, default=2000)
    parser.add_argument("--max-test", type=int, default=2000, help="test rows per data set (a seeded sample)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        pack = Path(args.pack)
        if not (pack / "minilm" / "model.safetensors").is_file():
            raise GeepError(f"no pack at {pack}: make it on a development machine with `make gpu-pack`")
        device = torch.device(args.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise GeepError("no CUDA device here (pass --device cpu to try the script on a CPU)")
        args.precisions = parse_precisions(args.precisions)
        for precision in args.precisions:
            check_precision(precision, device)
        args.batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
        import transformers

        transformers.utils.logging.disable_progress_bar()
        header = {"device": describe_device(device), "versions": {
            "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__}, "precisions": args.precisions,
            "batch_sizes": args.batch_sizes, "repeats": args.repeats, "max_drop": args.max_drop, "data": {}}
        records = []
        for name in args.data.split(","):
            rows = read_rows(pack, name)
            model, info = train_model(pack, name, rows, args, device)
            texts, labels = subset(*rows["test"], args.max_test, 3)
            info["test_rows"] = len(texts)
            header["data"][name] = info
            records += bench_data(model, name, texts, labels, info["knobs"], args)
            print(f"{name}: done at {time.perf_counter() - start:.0f} s", flush=True)
        header["seconds"] = time.perf_counter() - start
    except GeepError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "gpu.json", json.dumps({"header": header, "records": records}, indent=1) + "\n")
    text = render(header, records)
    write_text_atomic(out / "gpu.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
