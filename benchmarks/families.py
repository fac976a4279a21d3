"""Issue 25's overhead check: what stepping an encoder layer by layer costs against the model's own forward, per family.

For each encoder family (random weights: only the shapes matter for time) at two sizes, a tiny one (hidden 32, 4
layers, the tests' shape) and a MiniLM-sized one (hidden 384, 6 layers, 12 heads, intermediate 1536; ELECTRA-small
and ALBERT embed in 128; DeBERTa-v3 with 256 position buckets; ModernBERT with its 128-token local window), a
fine-tuned ``*ForSequenceClassification`` is saved with a WordPiece vocabulary and wrapped by geep
(``MultiExitClassifier.from_encoder``: its own head is the teacher). Then, in one process, pinned to one core
(run it under ``taskset -c 1``; torch uses 1 thread), rounds alternate, in turn order swapped every round:

- HF: the model's own forward (``model(**batch).logits.softmax(-1)``) over the rows in geep's length-sorted batches,
  each padded to its longest row (the padding is inside the timed call, as geep's is);
- geep: ``run_policy(model, encoded, "full")`` over the same rows (the executor, the scheduler, the backbone's
  adapter calling the family's own modules layer by layer, the teacher head).

Then one more ``full`` run under cProfile: the share of its time spent in geep's own Python code (``src/geep``: the
executor, the scheduler, the backbone and its adapter, everything but the calls into torch and transformers), an
upper bound on what stepping adds (the profiler inflates Python's share), measured within one run, so other jobs on
the machine hardly move it.

Each run is timed by the process's CPU time (``time.process_time``: on a machine shared with other jobs, a run's
wall time also counts the time the core spent on them) and by wall time. The report gives each median, the ratio
geep / HF, the spread of the runs (largest |run / median - 1|), and the largest difference between the two's
probabilities (0 when stepping is exact).

    taskset -c 1 python benchmarks/families.py --rounds 7 --output benchmarks/results/families.md
"""

from __future__ import annotations

import argparse
import cProfile
import platform
import pstats
import statistics
import tempfile
import time
from pathlib import Path

import torch
import transformers
from transformers import (AlbertConfig, AutoModelForSequenceClassification, BertConfig, BertTokenizer, DebertaConfig,
                          DebertaV2Config, DistilBertConfig, ElectraConfig, ModernBertConfig, MPNetConfig,
                          RobertaConfig, XLMRobertaConfig)

from geep.inference import run_policy
from geep.modeling import MultiExitClassifier
from geep.tokens import pad_token_ids

VOCAB = 1000
LABELS = {0: "a", 1: "b", 2: "c"}


def bert_like(hidden: int, layers: int, heads: int, intermediate: int, positions: int) -> dict:
    return dict(vocab_size=VOCAB, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                intermediate_size=intermediate, max_position_embeddings=positions, pad_token_id=0)


def configs(size: str) -> dict[str, transformers.PreTrainedConfig]:
    """Every family's config at ``size`` (``tiny`` or ``minilm``)."""
    H, L, nh, I, E = (32, 4, 2, 37, 16) if size == "tiny" else (384, 6, 12, 1536, 128)
    P = 130  # max positions: rows up to 128 tokens (RoBERTa-style positions start after the padding index)
    base = bert_like(H, L, nh, I, P)
    deberta = dict(base, relative_attention=True, pos_att_type=["c2p", "p2c"], type_vocab_size=0)
    buckets = 8 if size == "tiny" else 256
    return {
        "BERT": BertConfig(**base),
        "RoBERTa": RobertaConfig(**dict(base, pad_token_id=1)),
        "XLM-RoBERTa": XLMRobertaConfig(**dict(base, pad_token_id=1)),
        "ELECTRA-small shape": ElectraConfig(**dict(base, embedding_size=E)),
        "ELECTRA-base shape": ElectraConfig(**dict(base, embedding_size=H)),
        "DistilBERT": DistilBertConfig(vocab_size=VOCAB, dim=H, n_layers=L, n_heads=nh, hidden_dim=I,
                                       max_position_embeddings=P, pad_token_id=0),
        "ALBERT": AlbertConfig(**dict(base, embedding_size=E)),
        "MPNet": MPNetConfig(**base),
        "DeBERTa": DebertaConfig(**dict(deberta, max_relative_positions=P)),
        "DeBERTa-v2": DebertaV2Config(**dict(deberta, position_buckets=buckets, max_relative_positions=P,
                                             norm_rel_ebd="layer_norm", conv_kernel_size=3)),
        "DeBERTa-v3": DebertaV2Config(**dict(deberta, position_buckets=buckets, max_relative_positions=P,
                                             norm_rel_ebd="layer_norm", share_att_key=True,
                                             position_biased_input=False)),
        "ModernBERT": ModernBertConfig(vocab_size=VOCAB, hidden_size=H, num_hidden_layers=L, num_attention_heads=nh,
                                       intermediate_size=I, max_position_embeddings=P, pad_token_id=0,
                                       bos_token_id=2, eos_token_id=3, cls_token_id=2, sep_token_id=3,
                                       local_attention=8 if size == "tiny" else 128),
    }


def rows(n: int, low: int, high: int, seed: int = 0) -> list[list[int]]:
    """n rows of random token ids, of lengths low..high."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(low, high + 1, (n,), generator=g).tolist()
    return [[2] + torch.randint(5, VOCAB, (k - 1,), generator=g).tolist() for k in lengths]


def wrap(config: transformers.PreTrainedConfig, directory: Path) -> tuple[MultiExitClassifier, torch.nn.Module]:
    """A random fine-tuned classifier saved and wrapped by geep; (geep's model, the HF model)."""
    config.num_labels, config.id2label, config.label2id = 3, LABELS, {v: k for k, v in LABELS.items()}
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(directory)
    (directory / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
                                                   + [f"w{i}" for i in range(VOCAB - 5)]) + "\n")
    BertTokenizer(vocab=str(directory / "vocab.txt")).save_pretrained(directory)
    model = MultiExitClassifier.from_encoder(directory, head="linear", max_length=128).eval()
    return model, AutoModelForSequenceClassification.from_pretrained(directory).eval()


def hf_batches(model: MultiExitClassifier, encoded: dict, batch_size: int) -> list[list[list[int]]]:
    """The rows in geep's length-sorted batches (the shrink strategy's order: longest first, ties by index)."""
    ids = encoded["input_ids"]
    order = sorted(range(len(ids)), key=lambda i: (-len(ids[i]), i))
    return [[ids[i] for i in order[s:s + batch_size]] for s in range(0, len(ids), batch_size)]


def hf_run(model: MultiExitClassifier, hf, batches, pad_id: int) -> torch.Tensor:
    probs = []
    for batch in batches:
        padded = pad_token_ids(batch, None, pad_id, torch.device("cpu"))
        kwargs = model.backbone.family.forward_kwargs(padded["input_ids"], padded["attention_mask"],
                                                      torch.zeros_like(padded["input_ids"]))
        probs.append(hf(**kwargs).logits.softmax(-1))
    return torch.cat(probs)


def geep_share(fn) -> float:
    """The share of ``fn()``'s profiled time spent in geep's own code (functions defined under src/geep)."""
    profile = cProfile.Profile()
    profile.enable()
    fn()
    profile.disable()
    stats = pstats.Stats(profile).stats  # (file, line, name) -> (calls, prim calls, tottime, cumtime, callers)
    total = sum(v[2] for v in stats.values())
    own = sum(v[2] for (path, _, _), v in stats.items() if f"{Path('src', 'geep')}" in path)
    return own / total


def spread(times: list[float]) -> float:
    m = statistics.median(times)
    return max(abs(t / m - 1) for t in times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--sizes", default="tiny,minilm")
    p.add_argument("--families", default=None, help="comma-separated names from the table (default: all)")
    p.add_argument("--output", default=None, help="a Markdown report (default: print it)")
    args = p.parse_args()
    torch.set_num_threads(1)
    data = {"tiny": rows(512, 4, 60), "minilm": rows(64, 8, 128)}
    lines = [f"# Layer-by-layer stepping against each family's own forward ({args.rounds} interleaved rounds, "
             f"batch {args.batch_size}, 1 thread)", "",
             f"torch {torch.__version__}, transformers {transformers.__version__}, Python {platform.python_version()}, "
             f"{platform.processor() or platform.machine()}; cores this process may use: "
             f"{sorted(__import__('os').sched_getaffinity(0))}. The machine was shared with other agents' jobs.", "",
             "CPU time per run (median ms), its ratio and spreads; then the ratio of the wall-time medians.", "",
             "| family | size | rows (tokens) | HF forward (ms) | geep `full` (ms) | geep / HF | HF spread | geep spread "
             "| geep / HF, wall | geep's own code, profiled | max abs p_geep - p_HF |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        for size in args.sizes.split(","):
            encoded = {"input_ids": data[size]}
            tokens = sum(map(len, data[size]))
            for name, config in configs(size).items():
                if args.families and name not in args.families.split(","):
                    continue
                model, hf = wrap(config, Path(tmp) / f"{size}-{name.replace(' ', '_')}")
                batches = hf_batches(model, encoded, args.batch_size)
                pad = model.pad_token_id
                geep_p = run_policy(model, encoded, "full", batch_size=args.batch_size).probabilities  # warm-up
                hf_p = hf_run(model, hf, batches, pad)
                order = sorted(range(len(data[size])), key=lambda i: (-len(data[size][i]), i))
                diff = float((geep_p[order] - hf_p).abs().max())
                cpu, wall = {"hf": [], "geep": []}, {"hf": [], "geep": []}
                for r in range(args.rounds):
                    for which in (("hf", "geep") if r % 2 == 0 else ("geep", "hf")):
                        start, start_cpu = time.perf_counter(), time.process_time()
                        if which == "hf":
                            hf_run(model, hf, batches, pad)
                        else:
                            run_policy(model, encoded, "full", batch_size=args.batch_size)
                        cpu[which].append(time.process_time() - start_cpu)
                        wall[which].append(time.perf_counter() - start)
                share = geep_share(lambda: run_policy(model, encoded, "full", batch_size=args.batch_size))
                h, g = statistics.median(cpu["hf"]), statistics.median(cpu["geep"])
                wall_ratio = statistics.median(wall["geep"]) / statistics.median(wall["hf"])
                line = (f"| {name} | {size} | {len(data[size])} ({tokens}) | {1000 * h:.1f} | {1000 * g:.1f} | "
                        f"{g / h:.3f} | ±{100 * spread(cpu['hf']):.1f}% | ±{100 * spread(cpu['geep']):.1f}% | "
                        f"{wall_ratio:.3f} | {100 * share:.2f}% | {diff:.1e} |")
                print(line, flush=True)
                lines.append(line)
    report = "\n".join(lines) + "\n"
    if args.output:
        Path(args.output).write_text(report)
    print(report)


if __name__ == "__main__":
    main()
