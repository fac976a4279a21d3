"""Issue 12, item 2: which int8 to run on the CPU. Speed, accuracy and batch invariance of each candidate, one run.

Every candidate runs the whole model (``full``: embeddings, every layer, the last exit's head) on the packaged
MiniLM over bbc test rows truncated at 128 tokens (nearly all bbc rows are longer), one thread:

- ``fp32``: geep's own backend, the reference;
- ``geep int8``: geep's int8 backend (``geep.runtime.int8``: per-token activation scales, ``torch._int_mm``,
  attention inputs in float64); ``geep int8, attention in fp32``: the same with fp32 attention (what exact batch
  invariance costs);
- ``torch quantize_dynamic``: ``torch.ao.quantization.quantize_dynamic`` on the encoder's Linears (fbgemm; one
  activation scale per tensor; deprecated in torch 2.13);
- ``torchao int8 (eager)``: ``quantize_(encoder, Int8DynamicActivationInt8WeightConfig())`` (per-token
  activations, per-channel weights), run eagerly;
- ``ONNX Runtime int8``: one ONNX session per segment (embeddings, each layer, the last head; ``torch.onnx.export``),
  each quantised by ``onnxruntime.quantization.quantize_dynamic`` (``DynamicQuantizeLinear``: a scale per tensor);
  the hidden states stay in ``OrtValue``s between segments;
- ``bf16``: geep's bf16 backend (the CPU has AVX512-BF16).

The torch candidates run through geep's ``run_policy`` (the same executor), ONNX Runtime through its own loop over
the same length-sorted batches. Timing: warm-up, then ``--repeats`` rounds interleaved over the candidates, medians;
speed-ups are against fp32 in the same rounds. Accuracy: the largest difference of any row's class probabilities from
fp32's. Batch invariance: the largest difference of a row's probabilities run alone and run in a batch of 64.
``--compile`` instead measures torchao under ``torch.compile`` (compile time for the first shapes, then speed).

The exit heads are random (the packaged encoder has none), rescaled so their logits have std 2 on these rows
(``make_decisive`` in the tests), or pass ``--model DIR`` for a trained one.

    taskset -c 0 python benchmarks/int8_choice.py --output benchmarks/results/int8_choice.md
    taskset -c 0 python benchmarks/int8_choice.py --compile --output benchmarks/results/int8_compile.md

Needs the extra ``int8-choice`` (torchao, onnxruntime, onnx, onnxscript).
"""

from __future__ import annotations

import argparse
import copy
import logging
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

from geep.bench.timing import time_interleaved  # noqa: E402
from geep.data import get_columns, load_dataset_spec, stratified_subset  # noqa: E402
from geep.inference import all_exit_logits, run_policy  # noqa: E402
from geep.io import write_text_atomic  # noqa: E402
from geep.modeling import MultiExitClassifier  # noqa: E402
from geep.tokens import pad_token_ids  # noqa: E402


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
    """A copy of ``model`` whose encoder Linears are quantised by ``how``."""
    out = copy.deepcopy(model)
    encoder = out.backbone.encoder.encoder
    if how == "geep-fp32-attention":  # geep's int8 with the attention inputs left in fp32 (not batch-invariant)
        from geep.runtime import int8

        kept, int8.ATTENTION_INPUTS = int8.ATTENTION_INPUTS, ()
        try:
            for layer in out.backbone.layers:
                int8.quantize_linears(layer)
        finally:
            int8.ATTENTION_INPUTS = kept
    elif how == "quantize_dynamic":
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

    def probabilities(self, encoded: dict, order: list[int], batch_size: int) -> torch.Tensor:
        """Class probabilities (N, C) of every row, run in batches of ``order``."""
        ort = self.ort
        out = {}
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            batch = pad_token_ids([encoded["input_ids"][i] for i in rows],
                                  [encoded["token_type_ids"][i] for i in rows], self.pad_id)
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
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, metavar="DIR", help="a trained geep model (default: see above)")
    parser.add_argument("--data", default="bbc:test")
    parser.add_argument("--rows", type=int, default=64, help="rows timed at batch 32 (default 64)")
    parser.add_argument("--rows-b1", type=int, default=8, help="rows timed at batch 1 (default 8)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--compile", action="store_true", help="measure torchao under torch.compile instead")
    parser.add_argument("--output", default=None, metavar="FILE.md")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.compile:  # a cold compile cache, as a user's first run has (the inductor cache lives on disk)
        import os

        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="int8-choice-inductor-")
    torch.set_num_threads(args.threads)
    cols = get_columns(load_dataset_spec(args.data), "text", None, "label", source=args.data, require_labels=True)
    keep = stratified_subset(cols.labels, min(args.rows, len(cols.labels)), seed=0)
    texts = [cols.texts[i] for i in keep]
    model = make_model(args.model, texts, cols.labels)
    encoded = model.tokenize(texts)
    lengths = [len(x) for x in encoded["input_ids"]]
    b1 = list(range(min(args.rows_b1, len(texts))))
    encoded_b1 = {k: [v[i] for i in b1] for k, v in encoded.items()}
    lines = [f"# int8 on the CPU: the candidates (`benchmarks/int8_choice.py{' --compile' if args.compile else ''}`)",
             "", f"- data: `{args.data}`, {len(texts)} rows (a seeded stratified subset), tokens per row: min {min(lengths)}, "
             f"max {max(lengths)}; {args.threads} thread(s); median of {args.repeats} interleaved rounds after a "
             f"warm-up; torch {torch.__version__}", ""]
    if args.compile:
        lines += compile_report(model, encoded, args)
    else:
        lines += candidates_report(model, encoded, encoded_b1, args)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.output:
        write_text_atomic(args.output, text)


def candidates_report(model, encoded, encoded_b1, args) -> list[str]:
    n = len(encoded["input_ids"])
    runners = {}

    def torch_runner(m, precision="fp32"):
        return lambda enc, b: run_policy(m, enc, "full", batch_size=b, precision=precision).probabilities

    prep = {}
    start = time.perf_counter()
    runners["fp32 (geep)"] = torch_runner(model)
    prep["fp32 (geep)"] = 0.0
    for name, fn in (("geep int8 (per-token, _int_mm)", lambda: torch_runner(model, "int8")),
                     ("geep int8, attention in fp32", lambda: torch_runner(torch_variant(model, "geep-fp32-attention"))),
                     ("torch quantize_dynamic", lambda: torch_runner(torch_variant(model, "quantize_dynamic"))),
                     ("torchao int8 (eager)", lambda: torch_runner(torch_variant(model, "torchao"))),
                     ("bf16 (geep)", lambda: torch_runner(model, "bf16"))):
        start = time.perf_counter()
        runners[name] = fn()
        if "geep" in name:  # geep prepares its copy on first use
            runners[name](encoded_b1, 1)
        prep[name] = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        try:
            ort_model = OrtSegments(model, Path(tmp))
            runners["ONNX Runtime int8 (segments)"] = lambda enc, b: ort_model.probabilities(
                enc, sorted(range(len(enc["input_ids"])), key=lambda i: len(enc["input_ids"][i])), b)
            prep["ONNX Runtime int8 (segments)"] = time.perf_counter() - start
        except Exception as e:  # an exporter failure is a finding, reported in the table
            logging.warning("ONNX Runtime candidate failed: %s", str(e).splitlines()[0])
        names = list(runners)
        with torch.inference_mode():
            probs64 = {name: runners[name](encoded, 64) for name in names}  # also a warm-up
            runs32 = [lambda r=runners[name]: r(encoded, 32) for name in names]
            runs1 = [lambda r=runners[name]: r(encoded_b1, 1) for name in names]
            out32, sec32 = time_interleaved(runs32, repeats=args.repeats, warmup=1)
            out1, sec1 = time_interleaved(runs1, repeats=args.repeats, warmup=1)
    ref32 = out32[0]
    fp32_32, fp32_1 = statistics.median(sec32[0]), statistics.median(sec1[0])
    k = len(encoded_b1["input_ids"])
    rows = ["| candidate | rows/s b32 | vs fp32 b32 | rows/s b1 | vs fp32 b1 | b32 / b1 | max prob diff vs fp32 | "
            "labels as fp32 | batch invariance (alone vs batch 64) | prepare s |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for i, name in enumerate(names):
        m32, m1 = statistics.median(sec32[i]), statistics.median(sec1[i])
        diff = float((out32[i] - ref32).abs().max())
        invariance = float((out1[i] - probs64[name][:k]).abs().max())
        agree = float((out32[i].argmax(-1) == ref32.argmax(-1)).float().mean())
        rows.append(f"| {name} | {n / m32:.1f} | {fp32_32 / m32:.2f}x | {k / m1:.1f} | {fp32_1 / m1:.2f}x | "
                    f"{(n / m32) / (k / m1):.2f}x | {diff:.2e} | {100 * agree:.1f}% | {invariance:.2e} | {prep[name]:.1f} |")
    return rows


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
