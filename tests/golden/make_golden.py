"""Writes the golden records the inference-core refactor is checked against (issue 10).

Run ONCE, on the code before the refactor (geep 0.1.0, commit 9db08d3), from the repository root:

    .venv/bin/python tests/golden/make_golden.py

It saves two seeded tiny models as geep 0.1.0 model directories (config.json with calibrated default knobs,
model.safetensors, the tokenizer, exit_table.safetensors) and, for every policy, a grid of knobs and batch sizes 1
and 16: each row's label and exit layer from a live run, and each knob's accuracy, mean exit layer and FLOPs from
the calibration sweep. ``tests/test_golden.py`` compares the current code with these records exactly.

This script uses the 0.1.0 API on purpose: it is kept as the record of how the goldens were made, and is not run by
the tests.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import torch
from transformers import BertModel

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import conftest  # noqa: E402
from geep.calibrate import sweep  # noqa: E402
from geep.config import GeepConfig  # noqa: E402
from geep.engine import all_exit_logits, run_policy  # noqa: E402
from geep.model import MultiExitClassifier  # noqa: E402
from geep.policies import POLICIES, entropy, get_policy  # noqa: E402

N_ROWS = 60
BATCH_SIZES = (1, 16)
GRID_POINTS = 7
# Two models that differ in every way the schedule depends on: exits, head kind, pooling, classes.
MODELS = {
    "attention-mean-all-exits": dict(num_layers=4, num_labels=3, head="attention", pooling="mean", exit_layers=[],
                                     head_width=16),
    "linear-first-exits-2-3": dict(num_layers=4, num_labels=2, head="linear", pooling="first", exit_layers=[2, 3]),
}


def make_decisive(model, texts):
    """Rescales every exit's classifier so its logits over ``texts`` are centred with std 2 (as the engine tests
    do), so rows really exit at different layers."""
    logits = all_exit_logits(model, texts, batch_size=16).logits
    with torch.no_grad():
        for i, k in enumerate(model.exit_layers):
            mean = logits[:, i].mean(0)
            scale = 2.0 / (logits[:, i] - mean).std()
            head = model.heads[str(k)]
            head.classifier.weight.mul_(scale)
            head.classifier.bias.sub_(mean).mul_(scale)
    return model


def build(name: str, spec: dict, directory: Path) -> tuple[MultiExitClassifier, list[str], list[int]]:
    spec = dict(spec)
    L, C = spec.pop("num_layers"), spec.pop("num_labels")
    torch.manual_seed(0)
    encoder = BertModel(conftest.tiny_bert_config(L))
    config = GeepConfig(num_layers=L, label_names=[f"c{i}" for i in range(C)], **spec)
    model = MultiExitClassifier(encoder, config, conftest.tiny_tokenizer(directory / "tokenizer-src")).eval()
    texts = conftest.random_texts(N_ROWS, seed=11, min_words=0, max_words=25)
    make_decisive(model, texts)
    logits = all_exit_logits(model, texts, batch_size=16).logits
    S = float((entropy(logits[:, 0]) / math.log(C)).quantile(0.6))
    model.build_table(conftest.random_texts(80, seed=12), build_threshold=round(S, 4), source="random texts")
    # Labels: the full model's answers with a fifth of them replaced at random, so accuracy means something.
    g = torch.Generator().manual_seed(5)
    labels = logits[:, -1].argmax(-1)
    flip = torch.rand(N_ROWS, generator=g) < 0.2
    labels = torch.where(flip, torch.randint(0, C, (N_ROWS,), generator=g), labels).tolist()
    # A calibrated default for every policy, so that a 0.1.0 directory's stored knobs are part of the record.
    model.calibrate(texts, [model.label_names[i] for i in labels], target_speedup=1.3, grid_points=11)
    return model, texts, labels


def main() -> None:
    out: dict = {"made_by": "tests/golden/make_golden.py at geep 0.1.0 (commit 9db08d3)", "n_rows": N_ROWS,
                 "batch_sizes": list(BATCH_SIZES), "models": {}}
    torch.set_num_threads(1)
    for name, spec in MODELS.items():
        directory = HERE / name
        model, texts, labels = build(name, spec, directory)
        model.save_pretrained(directory)
        for stale in (directory / "tokenizer-src").iterdir():
            stale.unlink()
        (directory / "tokenizer-src").rmdir()
        (directory / "texts.json").write_text(json.dumps({"texts": texts, "labels": labels}, indent=1) + "\n")
        model = MultiExitClassifier.from_pretrained(directory)  # what a user of the directory gets
        encoded = model.tokenize(texts)
        y = torch.tensor(labels)
        record: dict = {"default_knobs": dict(model.config.default_knobs), "runs": [], "sweeps": [], "full": {}}
        C, E = model.config.num_labels, len(model.exit_layers)
        for policy_name in POLICIES:
            policy = get_policy(policy_name)
            knobs = policy.grid(C, E, GRID_POINTS)
            if policy.knob_spec(C, E) is not None:
                knobs = knobs + [None]  # None: the calibrated default stored in the directory
            for knob in knobs:
                for batch_size in BATCH_SIZES:
                    run = run_policy(model, encoded, policy_name, knob, batch_size=batch_size,
                                     labels=y if policy.needs_labels else None)
                    record["runs"].append({
                        "policy": policy_name, "knob": knob, "batch_size": batch_size,
                        "labels": run.probabilities.argmax(-1).tolist(), "exit_layers": run.exit_layers.tolist(),
                        "flops": run.flops.total})
        calibrated = [p for p in POLICIES if p not in ("full", "oracle")]
        for batch_size in BATCH_SIZES:
            result = sweep(model, encoded, y, policies=calibrated, batch_size=batch_size, grid_points=GRID_POINTS)
            record["full"][str(batch_size)] = {"accuracy": result.full.accuracy, "flops": result.full_flops}
            for policy_name, points in result.points.items():
                for p in points:
                    flops = round(result.full_flops / p.flops_speedup)
                    record["sweeps"].append({
                        "policy": policy_name, "knob": p.knob, "batch_size": batch_size, "accuracy": p.accuracy,
                        "mean_exit_layer": p.mean_exit_layer, "flops_speedup": p.flops_speedup, "flops": flops,
                        "exit_histogram": {str(k): v for k, v in p.exit_histogram.items()}})
        out["models"][name] = record
    (HERE / "records.json").write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {HERE / 'records.json'}")


if __name__ == "__main__":
    main()
