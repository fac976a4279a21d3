"""Issues 12 and 23: which int8 to run on the CPU. Speed, accuracy and batch invariance of each candidate, one run.

Every candidate runs the whole model (``full``: embeddings, every layer, the last exit's head) over test rows of
``--data`` truncated at the model's max length, one thread (``--candidates``, default all but torchao):

- ``fp32``: geep's own backend, the reference;
- ``int8``: geep's int8 (``geep.runtime.int8``: per-token activation scales, ``torch._int_mm``; each row's
  attention over its own length, ``geep.runtime.exact_attention``): the precision ``int8``, exact;
- ``int8-padded``: the same int8 with the encoder's own padded attention (transformers' SDPA over the batch's
  longest row): what exactness costs, not batch-invariant;
- ``quantize_dynamic``: ``torch.ao.quantization.quantize_dynamic`` on the encoder's Linears (fbgemm; one
  activation scale per tensor; deprecated in torch 2.13);
- ``torchao``: ``quantize_(encoder, Int8DynamicActivationInt8WeightConfig())`` (per-token activations,
  per-channel weights), run eagerly (``--compile`` measures it under ``torch.compile`` instead);
- ``onnxruntime``: one ONNX Runtime session per segment (embeddings, each layer, the last head;
  ``torch.onnx.export``), the layers quantised by ``onnxruntime.quantization.quantize_dynamic``
  (``DynamicQuantizeLinear``: a scale per tensor); the hidden states stay in ``OrtValue``s between segments;
- ``bf16``: geep's bf16 backend (this CPU has AVX512-BF16).

The torch candidates run through geep's ``run_policy`` (the same executor and length-sorted batches), ONNX Runtime
through its own loop over the same length-sorted batches.

- Speed: ``--rows`` rows at batch 32 and ``--rows-b1`` rows at batch 1; a warm-up, then ``--repeats`` rounds
  interleaved over the candidates (round r starts at candidate r mod P), medians; ratios are against fp32 (and
  ``quantize_dynamic``) in the same rounds. ``--clock wall`` (default) times wall-clock seconds; ``--clock thread``
  the calling thread's CPU time (``time.thread_time``: every candidate computes in the calling thread at one
  thread), which a machine loaded by other processes disturbs far less.
- Accuracy: every candidate labels ``--eval-rows`` rows (default: all of ``--data``, at most 1000) at batch 32:
  its accuracy against the data's labels, the change from fp32 in points, the share of labels as fp32's and the
  largest difference of any row's class probabilities from fp32's.
- Batch invariance: ``--invariance-rows`` rows run alone (batch 1), in one batch of 64 and in batches of 32: the
  largest difference of a row's probabilities alone and in the batch of 64, and how many labels differ between
  batch 1 and batch 32.

Without ``--model`` the packaged MiniLM runs with random exit heads, rescaled so their logits have std 2 on these
rows (``make_decisive`` in the tests): that ranks speed, but issue 23's accuracy targets need a trained model.

    python -m geep.cli.main train --model minilm --train bbc:train --dev bbc:dev --epochs 1 --distil-epochs 1 \\
        --output runs/bbc-geep
    python -m geep.cli.main train --model minilm --train tweets:train --dev tweets:dev --max-train-samples 2000 \\
        --max-dev-samples 500 --epochs 1 --distil-epochs 1 --output runs/tweets-geep
    taskset -c 0 python benchmarks/int8_choice.py --model runs/bbc-geep --data bbc:test \\
        --output benchmarks/results/int8_choice.md
    taskset -c 0 python benchmarks/int8_choice.py --model runs/tweets-geep --data tweets:test --rows 128 \\
        --rows-b1 16 --output benchmarks/results/int8_choice_tweets.md
    taskset -c 0 python benchmarks/int8_choice.py --compile --output benchmarks/results/int8_compile.md

Writes FILE.md and FILE.json (every figure). Needs the extra ``int8-choice`` (torchao, onnxruntime, onnx,
onnxscript) for those candidates.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import shlex
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from geep.bench.provenance import environment  # noqa: E402
from geep.bench.timing import time_interleaved  # noqa: E402
from geep.data import get_columns, load_dataset_spec, stratified_subset  # noqa: E402
from geep.inference import all_exit_logits, run_policy  # noqa: E402
from geep.io import write_text_atomic  # noqa: E402
from geep.modeling import MultiExitClassifier  # noqa: E402
from geep.runtime.precision import prepared_model  # noqa: E402
from geep.tokens import pad_token_ids  # noqa: E402

NAMES = {
    "fp32": "fp32 (geep)",
    "int8": "**geep int8** (exact: per-token scales, `_int_mm`, own-length attention)",
    "int8-padded": "geep int8, padded attention (not batch-invariant)",
    "quantize_dynamic": "torch `quantize_dynamic` (fbgemm; a scale per tensor)",
    "torchao": "torchao `Int8DynamicActivationInt8WeightConfig`, eager",
    "onnxruntime": "ONNX Runtime int8, a session per segment (a scale per tensor)",
    "bf16": "bf16 (geep)",
}
DEFAULT_CANDIDATES = "fp32,int8,int8-padded,quantize_dynamic,onnxruntime,bf16"
CLOCKS = {"wall": time.perf_counter, "thread": time.thread_time}


def make_model(model_dir: str | None, texts: list[str], labels: list[str]) -> MultiExitClassifier:
    if model_dir:
        return MultiExitClassifier.from_pretrained(model_dir)
    torch.manual_seed(0)
    model = MultiExitClassifier.from_encoder("minilm", sorted(set(labels)), pooling="mean", max_length=128).eval()
    logits = all_exit_logits(model, texts, batch_size=32).logits  # (N, |E|, C)
    with torch.no_grad():
        for i, k in enumerate(model.exit_layers):
            mean = logits[:, i].mean(0)
            scale = 2.0 / (logits[:, i] - mean).std()
            model.heads[str(k)].classifier.weight.mul_(scale)
            model.heads[str(k)].classifier.bias.sub_(mean).mul_(scale)
    return model


def torch_variant(model: MultiExitClassifier, how: str) -> MultiExitClassifier:
    """A copy of ``model`` whose encoder runs ``how``."""
    if how == "int8-padded":  # geep's int8 copy, switched back to the encoder's own (padded) attention
        out = copy.deepcopy(prepared_model(model, "int8"))
        out.backbone.encoder.set_attn_implementation(model.backbone.config._attn_implementation)
        return out.eval()
    out = copy.deepcopy(model)
    encoder = out.backbone.encoder.encoder
    if how == "quantize_dynamic":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.ao.quantization.quantize_dynamic(encoder, {nn.Linear}, dtype=torch.qint8, inplace=True)
    elif how == "torchao":
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

        quantize_(encoder, Int8DynamicActivationInt8WeightConfig())
    return out.eval()


# ----------------------------------------------------------------------------------------------- ONNX Runtime
class _Embed(nn.Module):
    def __init__(self, model: MultiExitClassifier) -> None:
        super().__init__()
        self.embeddings = model.backbone.encoder.embeddings

    def forward(self, input_ids, token_type_ids):
        return self.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)


class _Layer(nn.Module):
    def __init__(self, model: MultiExitClassifier, k: int) -> None:
        super().__init__()
        self.layer = model.backbone.layers[k - 1]

    def forward(self, hidden, attention_mask):
        additive = (1.0 - attention_mask[:, None, None, :].to(hidden.dtype)) * torch.finfo(hidden.dtype).min
        out = self.layer(hidden, attention_mask=additive)
        return out[0] if isinstance(out, tuple) else out


class _Head(nn.Module):
    def __init__(self, model: MultiExitClassifier, k: int) -> None:
        super().__init__()
        self.head = model.heads[str(k)]

    def forward(self, hidden, attention_mask):
        return self.head(hidden, attention_mask)


class OrtSegments:
    """One ONNX Runtime session per segment: embeddings, each layer, the last exit's head, each quantised."""

    def __init__(self, model: MultiExitClassifier, directory: Path, quantize: bool = True) -> None:
        import onnxruntime as ort
        from onnxruntime.quantization import QuantType, quantize_dynamic

        self.ort, self.pad_id, L = ort, model.pad_token_id, model.num_layers
        model = copy.deepcopy(model).eval()
        model.backbone.config._attn_implementation = "eager"  # a plain additive mask, exported as matmuls
        B, T, H = 2, 16, model.backbone.config.hidden_size
        ids = torch.ones((B, T), dtype=torch.long)
        mask = torch.ones((B, T), dtype=torch.long)
        hidden = torch.randn(B, T, H)
        seq = {0: "batch", 1: "seq"}
        segments = [("embed", _Embed(model), (ids, torch.zeros_like(ids)), ["input_ids", "token_type_ids"],
                     {"input_ids": seq, "token_type_ids": seq, "out": {0: "batch", 1: "seq"}})]
        segments += [(f"layer{k}", _Layer(model, k), (hidden, mask), ["hidden", "attention_mask"],
                      {"hidden": seq, "attention_mask": seq, "out": seq}) for k in range(1, L + 1)]
        segments += [("head", _Head(model, L), (hidden, mask), ["hidden", "attention_mask"],
                      {"hidden": seq, "attention_mask": seq, "out": {0: "batch"}})]
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        self.sessions = {}
        for name, module, args, inputs, axes in segments:
            path = directory / f"{name}.onnx"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(module, args, str(path), input_names=inputs, output_names=["out"],
                                  dynamic_axes=axes, opset_version=17, dynamo=False)
            if quantize and name.startswith("layer"):
                qpath = directory / f"{name}.int8.onnx"
                quantize_dynamic(str(path), str(qpath), weight_type=QuantType.QInt8)
                path = qpath
            self.sessions[name] = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.num_layers = L

    def probabilities(self, encoded: dict, batch_size: int) -> torch.Tensor:
        """Class probabilities (N, C) of every row, run in length-sorted batches of ``batch_size``."""
        ort = self.ort
        order = sorted(range(len(encoded["input_ids"])), key=lambda i: len(encoded["input_ids"][i]))
        types = encoded.get("token_type_ids") or [[0] * len(x) for x in encoded["input_ids"]]
        out = {}
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            batch = pad_token_ids([encoded["input_ids"][i] for i in rows], [types[i] for i in rows], self.pad_id)
            mask = ort.OrtValue.ortvalue_from_numpy(batch["attention_mask"].numpy())
            (h,) = self.sessions["embed"].run_with_ort_values(
                ["out"], {"input_ids": ort.OrtValue.ortvalue_from_numpy(batch["input_ids"].numpy()),
                          "token_type_ids": ort.OrtValue.ortvalue_from_numpy(batch["token_type_ids"].numpy())})
            for k in range(1, self.num_layers + 1):
                (h,) = self.sessions[f"layer{k}"].run_with_ort_values(["out"], {"hidden": h, "attention_mask": mask})
            (logits,) = self.sessions["head"].run_with_ort_values(["out"], {"hidden": h, "attention_mask": mask})
            probs = torch.from_numpy(logits.numpy()).softmax(-1)
            for r, i in enumerate(rows):
                out[i] = probs[r]
        return torch.stack([out[i] for i in range(len(order))])


# ---------------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, metavar="DIR", help="a trained geep model (default: see above)")
    parser.add_argument("--data", default="bbc:test")
    parser.add_argument("--candidates", default=DEFAULT_CANDIDATES, help=f"of: {', '.join(NAMES)}")
    parser.add_argument("--rows", type=int, default=64, help="rows timed at batch 32 (default 64)")
    parser.add_argument("--rows-b1", type=int, default=8, help="rows timed at batch 1 (default 8)")
    parser.add_argument("--eval-rows", type=int, default=1000, help="rows labelled for accuracy (default 1000)")
    parser.add_argument("--invariance-rows", type=int, default=64, help="rows run alone and batched (default 64)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=list(CLOCKS), default="wall")
    parser.add_argument("--compile", action="store_true", help="measure torchao under torch.compile instead")
    parser.add_argument("--output", default=None, metavar="FILE.md")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.ERROR)  # onnxruntime.quantization warns once per layer on the root logger
    if args.compile:  # a cold compile cache, as a user's first run has (the inductor cache lives on disk)
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="int8-choice-inductor-")
    torch.set_num_threads(args.threads)
    cols = get_columns(load_dataset_spec(args.data), "text", None, "label", source=args.data, require_labels=True)
    evaluated = stratified_subset(cols.labels, min(args.eval_rows, len(cols.labels)), seed=0)
    timed = stratified_subset(cols.labels, min(args.rows, len(cols.labels)), seed=0)
    texts = [cols.texts[i] for i in timed]
    model = make_model(args.model, texts, cols.labels)
    encoded = model.tokenize(texts)
    lengths = [len(x) for x in encoded["input_ids"]]
    command = "python benchmarks/int8_choice.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    load = os.getloadavg()
    lines = [f"# int8 on the CPU: the candidates (`benchmarks/int8_choice.py`)", "", f"`{command}`", "",
             f"- model: `{args.model or 'packaged MiniLM, random exit heads'}`; data: `{args.data}`; timed: "
             f"{len(texts)} rows at batch 32 (a seeded stratified subset; tokens per row: min {min(lengths)}, max "
             f"{max(lengths)}) and {min(args.rows_b1, len(texts))} of them at batch 1; {args.threads} thread(s); "
             f"clock: {args.clock}; median of {args.repeats} interleaved rounds after a warm-up; torch "
             f"{torch.__version__}; load average at the start {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} "
             f"({os.cpu_count()} CPUs)", ""]
    if args.compile:
        lines += compile_report(model, encoded, args)
        record = {}
    else:
        record = candidates_report(model, encoded, cols, evaluated, args)
        lines += record.pop("lines")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(args.output, text)
        if record:
            record.update(command=command, environment=environment(), load_average=load)
            write_text_atomic(Path(args.output).with_suffix(".json"), json.dumps(record, indent=1) + "\n")


def _runners(model: MultiExitClassifier, names: list[str], warm: dict) -> tuple[dict, dict]:
    """name -> run(encoded, batch_size) -> probabilities (N, C) in the rows' order; and each one's prepare seconds."""
    def torch_runner(m, precision="fp32"):
        return lambda enc, b: run_policy(m, enc, "full", batch_size=b, precision=precision).probabilities

    runners, prep = {}, {}
    for name in names:
        start = time.perf_counter()
        try:
            if name in ("fp32", "int8", "bf16"):
                runners[name] = torch_runner(model, name)
                runners[name](warm, 1)  # geep prepares its copy on first use
            elif name == "onnxruntime":
                directory = tempfile.mkdtemp(prefix="int8-choice-onnx-")
                ort_model = OrtSegments(model, Path(directory))
                runners[name] = lambda enc, b, m=ort_model: m.probabilities(enc, b)
            else:
                runners[name] = torch_runner(torch_variant(model, name))
        except Exception as e:  # an exporter or a missing extra is a finding, reported in the table
            print(f"candidate {name} failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
            continue
        prep[name] = time.perf_counter() - start
    return runners, prep


def interleaved(runs: list, repeats: int, clock) -> list[list[float]]:
    """``repeats`` rounds over ``runs`` after one warm-up round, round r starting at run r mod P: seconds[run][r]."""
    for run in runs:
        run()
    seconds: list[list[float]] = [[] for _ in runs]
    for r in range(repeats):
        for j in range(len(runs)):
            i = (j + r) % len(runs)
            start = clock()
            runs[i]()
            seconds[i].append(clock() - start)
    return seconds


def candidates_report(model, encoded, cols, evaluated, args) -> dict:
    names = [n.strip() for n in args.candidates.split(",") if n.strip()]
    unknown = [n for n in names if n not in NAMES]
    if unknown or "fp32" not in names:
        raise SystemExit(f"--candidates: unknown {unknown}; fp32 is needed as the reference")
    subset = lambda enc, idx: {k: [v[i] for i in idx] for k, v in enc.items()}  # noqa: E731
    b1 = subset(encoded, range(min(args.rows_b1, len(encoded["input_ids"]))))
    runners, prep = _runners(model, names, subset(encoded, [0]))
    names = list(runners)
    clock = CLOCKS[args.clock]
    with torch.inference_mode():
        seconds32 = interleaved([lambda r=runners[n]: r(encoded, 32) for n in names], args.repeats, clock)
        seconds1 = interleaved([lambda r=runners[n]: r(b1, 1) for n in names], args.repeats, clock)
        eval_enc = model.tokenize([cols.texts[i] for i in evaluated])
        truth = [cols.labels[i] for i in evaluated]
        inv = subset(eval_enc, range(min(args.invariance_rows, len(evaluated))))
        probs = {n: runners[n](eval_enc, 32) for n in names}
        alone = {n: runners[n](inv, 1) for n in names}
        in64 = {n: runners[n](inv, 64) for n in names}
        in32 = {n: probs[n][:len(inv["input_ids"])] for n in names}  # the same rows, in batches of 32
    label_names = model.label_names
    accuracy = {n: 100 * sum(label_names[int(i)] == y for i, y in zip(probs[n].argmax(-1), truth)) / len(truth)
                for n in names}
    m32 = {n: statistics.median(s) for n, s in zip(names, seconds32)}
    m1 = {n: statistics.median(s) for n, s in zip(names, seconds1)}
    n32, n1, n_inv = len(encoded["input_ids"]), len(b1["input_ids"]), len(inv["input_ids"])
    inv_lengths = [len(x) for x in inv["input_ids"]]
    figures = {}
    for n in names:
        figures[n] = {
            "rows_per_s_b32": n32 / m32[n], "vs_fp32_b32": m32["fp32"] / m32[n],
            "vs_quantize_dynamic_b32": m32["quantize_dynamic"] / m32[n] if "quantize_dynamic" in m32 else None,
            "rows_per_s_b1": n1 / m1[n], "vs_fp32_b1": m1["fp32"] / m1[n],
            "accuracy": accuracy[n], "accuracy_change_points": accuracy[n] - accuracy["fp32"],
            "labels_as_fp32": 100 * float((probs[n].argmax(-1) == probs["fp32"].argmax(-1)).float().mean()),
            "max_prob_diff_vs_fp32": float((probs[n] - probs["fp32"]).abs().max()),
            "invariance_alone_vs_b64": float((alone[n] - in64[n]).abs().max()),
            "label_flips_b1_vs_b32": int((alone[n].argmax(-1) != in32[n].argmax(-1)).sum()),
            "prepare_s": prep[n], "seconds_b32": seconds32[names.index(n)], "seconds_b1": seconds1[names.index(n)],
        }
    lines = [f"- accuracy: {len(truth)} rows of `{args.data}` (a seeded stratified subset) at batch 32; batch "
             f"invariance: {n_inv} of them (tokens per row: min {min(inv_lengths)}, max {max(inv_lengths)}) alone, "
             f"in one batch of 64 and in batches of 32", "",
             "| candidate | rows/s b32 | vs fp32 b32 | vs quantize_dynamic b32 | rows/s b1 | vs fp32 b1 | accuracy | "
             "change (points) | labels as fp32 | max prob diff vs fp32 | batch invariance (alone vs 64) | label "
             f"flips b1 vs b32 (of {n_inv}) | prepare s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for n in names:
        f = figures[n]
        vs_qd = "-" if f["vs_quantize_dynamic_b32"] is None else f"{f['vs_quantize_dynamic_b32']:.2f}x"
        lines.append(f"| {NAMES[n]} | {f['rows_per_s_b32']:.1f} | {f['vs_fp32_b32']:.2f}x | {vs_qd} | "
                     f"{f['rows_per_s_b1']:.1f} | {f['vs_fp32_b1']:.2f}x | {f['accuracy']:.2f}% | "
                     f"{f['accuracy_change_points']:+.2f} | {f['labels_as_fp32']:.1f}% | "
                     f"{f['max_prob_diff_vs_fp32']:.2e} | {f['invariance_alone_vs_b64']:.2e} | "
                     f"{f['label_flips_b1_vs_b32']} | {f['prepare_s']:.1f} |")
    lines += ["", *targets(figures)]
    return {"figures": figures, "lines": lines}


def targets(figures: dict) -> list[str]:
    """Issue 23's targets for exact int8, each met or not met, from this run's figures."""
    if "int8" not in figures:
        return []
    f = figures["int8"]
    met = lambda ok: "met" if ok else "not met"  # noqa: E731
    lines = ["Issue 23's targets (full model, batch 32, this run):",
             f"- exact int8 >= 2.5x fp32: {f['vs_fp32_b32']:.2f}x, {met(f['vs_fp32_b32'] >= 2.5)}"]
    if f["vs_quantize_dynamic_b32"] is not None:
        lines.append(f"- exact int8 >= 0.9x torch quantize_dynamic: {f['vs_quantize_dynamic_b32']:.2f}x, "
                     f"{met(f['vs_quantize_dynamic_b32'] >= 0.9)}")
    lines += [f"- accuracy change <= 0.5 point: {f['accuracy_change_points']:+.2f}, "
              f"{met(abs(f['accuracy_change_points']) <= 0.5)}",
              f"- batch invariance <= 1e-6: {f['invariance_alone_vs_b64']:.1e}, "
              f"{met(f['invariance_alone_vs_b64'] <= 1e-6)}"]
    if "int8-padded" in figures:
        cost = 1 - f["rows_per_s_b32"] / figures["int8-padded"]["rows_per_s_b32"]
        lines.append(f"- what exactness costs (int8 against int8 with padded attention): {100 * cost:.1f}% of "
                     "int8's throughput at batch 32")
    return lines


def compile_report(model, encoded, args) -> list[str]:
    """torchao under torch.compile: the time of the first call at each new shape (compile), then the speed."""
    eager = torch_variant(model, "torchao")
    compiled = torch_variant(model, "torchao")
    for i, layer in enumerate(compiled.backbone.layers):
        compiled.backbone.layers[i] = torch.compile(layer)
    n = len(encoded["input_ids"])
    lines = ["| call | seconds |", "|---|---:|"]
    with torch.inference_mode():
        for b in (32, 7, 5):  # three batch sizes: three shapes of (B, T) (then torch.compile goes dynamic)
            sub = {k: v[:b] for k, v in encoded.items()}
            start = time.perf_counter()
            run_policy(compiled, sub, "full", batch_size=b)
            lines.append(f"| first call at batch {b} (compiles) | {time.perf_counter() - start:.1f} |")
        runs = [lambda: run_policy(model, encoded, "full", batch_size=32),
                lambda: run_policy(eager, encoded, "full", batch_size=32),
                lambda: run_policy(compiled, encoded, "full", batch_size=32)]
        _, seconds = time_interleaved(runs, repeats=args.repeats, warmup=1)
    med = [statistics.median(s) for s in seconds]
    lines += ["", "| batch 32, warm | rows/s | vs fp32 |", "|---|---:|---:|"]
    for name, m in zip(("fp32 (geep)", "torchao int8 (eager)", "torchao int8 (torch.compile)"), med):
        lines.append(f"| {name} | {n / m:.1f} | {med[0] / m:.2f}x |")
    return lines


if __name__ == "__main__":
    main()
