"""How good is the token exit table as a predictor of exit layers? And what does predicting cost?

Everything here comes from ONE all-exits pass over the evaluation rows (a row's outputs do not depend on its
batch), so every comparison is at exactly the same exit histogram:

- ``fastbert``: the dynamic rule at threshold t gives a histogram h_t over the exits and an accuracy.
- each table variant (combine x ngram x where the table was built) gives each row a score (its predicted
  expected exit layer); rows ranked by that score get exactly the histogram h_t ("rank-matched").
- ``random``: the same histogram assigned in random order (mean and sd over 50 permutations).
- ``length``: the same histogram assigned by token length (longer rows exit later).
- ``oracle-rank``: the same histogram assigned by the oracle's exit (the best any static ranking can do).
- ``geep(tau)``: the variant's own tau-quantile predictions, interpolated to FastBERT's mean exit layer.

Costs: table build time, lookup throughput (keys/s), and the share of a ``geep`` run spent predicting exit
layers and sorting rows (on this device, batch ``--batch-size``).

    python benchmarks/exit_predictor.py --model runs/bbc-geep --data bbc:test --train-data bbc:train \
        --output runs/bench-predictor-bbc
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import time
from pathlib import Path

import torch

from geep.data import get_columns, load_dataset_spec, stratified_subset
from geep.evaluation import replay
from geep.exit_table import ExitTable, exit_distribution
from geep.inference import all_exit_logits, label_ids, run_policy
from geep.modeling import MultiExitClassifier
from geep.policies import get_policy
from geep.tokens import pad_batch, token_lengths

logger = logging.getLogger("exit_predictor")
MEAN_LAYERS = (1.2, 1.5, 2.0, 2.5, 3.0)  # operating points, in mean exit layers


def assign_by_rank(score: torch.Tensor, histogram: list[int], exits: list[int]) -> torch.Tensor:
    """Exit index (N,) giving the lowest-scored rows the earliest exits, with exactly ``histogram`` rows each."""
    order = torch.argsort(score, stable=True)
    index = torch.empty_like(order)
    start = 0
    for i, count in enumerate(histogram):
        index[order[start:start + count]] = i
        start += count
    return index


def accuracy_at(logits: torch.Tensor, labels: torch.Tensor, index: torch.Tensor) -> float:
    return float((logits[torch.arange(len(index)), index].argmax(-1) == labels).float().mean())


def interpolate(curve: list[tuple[float, float]], x: float) -> float | None:
    """y at x on a curve of (x, y) points, linear between neighbours; None outside its range."""
    curve = sorted(curve)
    for (x0, y0), (x1, y1) in zip(curve, curve[1:]):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return None


def exit_index(model, logits, encoded, policy: str, knob, labels=None) -> torch.Tensor:
    """Each row's exit index into E (N,) under ``policy`` at ``knob``, by the scheduler on the recorded logits."""
    n = logits.shape[0]
    _, layers, _ = replay(model, logits, encoded, policy, knob, batch_size=max(n, 1), labels=labels)
    position = {k: i for i, k in enumerate(model.exit_layers)}
    return torch.tensor([position[int(k)] for k in layers])


def padded_ids(model, encoded, rows):
    batch = pad_batch(encoded, rows, model.pad_token_id, model.device)
    return batch["input_ids"], batch["attention_mask"]


def predicted_layers(model, q, tau):
    return get_policy("geep").predict_layers(q, tau, model.exit_layers)


class Source:
    """Table rows, run once: their token ids and every exit's logits, so each build threshold is a replay."""

    def __init__(self, model, texts, pairs, batch_size: int) -> None:
        self.model, self.rows = model, len(texts)
        encoded = model.tokenize(texts, pairs)
        self.encoded = encoded
        self.ids, self.mask = padded_ids(model, encoded, range(len(texts)))
        self.logits = all_exit_logits(model, encoded, batch_size=batch_size).logits

    def build(self, threshold: float, ngram: int, combine: str) -> tuple[ExitTable, float]:
        """The table the fastbert rule at ``threshold`` gives (installed on the model) and its build seconds."""
        model = self.model
        exits = torch.tensor(model.exit_layers)[exit_index(model, self.logits, self.encoded, "fastbert", threshold)]
        start = time.perf_counter()
        table = ExitTable.build(self.ids, self.mask, exits, num_layers=model.num_layers,
                                vocab_size=model.backbone.config.vocab_size,
                                special_ids=model.tokenizer.all_special_ids, ngram=ngram, combine=combine)
        model.exit_table = table
        return table, time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True, help="evaluation rows (e.g. bbc:test)")
    p.add_argument("--train-data", default=None, help="the training rows, to compare a table built on them")
    p.add_argument("--max-train-samples", type=int, default=None, help="as given to geep train")
    p.add_argument("--seed", type=int, default=42, help="as given to geep train")
    p.add_argument("--table-data", default=None, help="held-out table rows (default: the model's table_data.jsonl)")
    p.add_argument("--build-thresholds", default="0.1,0.2,0.3")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--output", required=True)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.manual_seed(0)

    model = MultiExitClassifier.from_pretrained(args.model)
    cfg = model.config
    E = model.exit_layers
    cols = get_columns(load_dataset_spec(args.data), cfg.text_column, cfg.text_pair_column, cfg.label_column,
                       source=args.data, require_labels=True)
    encoded = model.tokenize(cols.texts, cols.text_pairs)
    labels = label_ids(model, cols.labels)
    lengths = torch.tensor(token_lengths(encoded), dtype=torch.float64)
    logits = all_exit_logits(model, encoded, batch_size=args.batch_size).logits  # (N, |E|, C)
    N = len(labels)
    oracle_index = exit_index(model, logits, encoded, "oracle", None, labels)

    # Operating points: the fastbert thresholds whose mean exit layer is nearest each target.
    grid = [i / 400 for i in range(401)]
    fb_curve = []
    for t in grid:
        index = exit_index(model, logits, encoded, "fastbert", t)
        mean_layer = float(torch.tensor(E)[index].double().mean())
        fb_curve.append((t, mean_layer, accuracy_at(logits, labels, index), index))
    points = []
    for target in MEAN_LAYERS:
        t, mean_layer, acc, index = min(fb_curve, key=lambda c: (abs(c[1] - target), c[0]))
        histogram = [int((index == i).sum()) for i in range(len(E))]
        points.append({"target_mean_layer": target, "fastbert_threshold": t, "mean_layer": mean_layer,
                       "fastbert": acc, "histogram": histogram})
    full_acc = accuracy_at(logits, labels, torch.full((N,), len(E) - 1))

    def rank_row(score: torch.Tensor) -> list[float]:
        return [accuracy_at(logits, labels, assign_by_rank(score, pt["histogram"], E)) for pt in points]

    baselines = {"length": rank_row(lengths), "oracle-rank": rank_row(oracle_index.double())}
    rand = [[accuracy_at(logits, labels, assign_by_rank(torch.rand(N, dtype=torch.float64), pt["histogram"], E))
             for _ in range(50)] for pt in points]
    baselines["random"] = [statistics.mean(r) for r in rand]
    random_sd = [statistics.stdev(r) for r in rand]

    # Table variants.
    sources = {}
    table_spec = args.table_data or str(Path(args.model) / "table_data.jsonl")
    tcols = get_columns(load_dataset_spec(table_spec), "text", "text_pair" if cfg.text_pair_column else None,
                        None, source=table_spec, require_labels=False)
    sources["held-out"] = Source(model, tcols.texts, tcols.text_pairs, args.batch_size)
    if args.train_data:
        tr = get_columns(load_dataset_spec(args.train_data), cfg.text_column, cfg.text_pair_column,
                         cfg.label_column, source=args.train_data, require_labels=True)
        rows = range(len(tr.texts))
        if args.max_train_samples:  # the same seeded subset `geep train --max-train-samples` trained on
            rows = stratified_subset(tr.labels, args.max_train_samples, args.seed)
        sources["train rows"] = Source(model, [tr.texts[i] for i in rows],
                                       None if tr.text_pairs is None else [tr.text_pairs[i] for i in rows],
                                       args.batch_size)
    variants = []
    layer_values = torch.arange(1, model.num_layers + 1, dtype=torch.float64)
    for source, rows in sources.items():
        for threshold in [float(x) for x in args.build_thresholds.split(",")]:
            for ngram in (1, 2):
                for combine in ("mean", "geometric", "vote"):
                    table, build_s = rows.build(threshold, ngram, combine)
                    q = exit_distribution(model.exit_table, encoded, model.pad_token_id).cpu()  # (N, L)
                    score = q @ layer_values  # expected exit layer
                    tau_curve = []
                    for tau in [i / 40 for i in range(41)]:
                        pred = predicted_layers(model, q, tau)
                        index = torch.tensor([E.index(int(k)) for k in pred])
                        tau_curve.append((float(pred.double().mean()), accuracy_at(logits, labels, index)))
                    variants.append({
                        "source": source, "rows": rows.rows, "build_threshold": threshold, "ngram": ngram,
                        "combine": combine, "build_seconds": build_s,
                        "distinct_predictions_at_tau_0.5": len(set(predicted_layers(model, q, 0.5).tolist())),
                        "rank_matched": rank_row(score),
                        "geep_tau": [interpolate(tau_curve, pt["mean_layer"]) for pt in points],
                    })
                    logger.info("%s S=%.2f ngram=%d %s: rank-matched %s", source, threshold, ngram, combine,
                                " ".join(f"{a:.3f}" for a in variants[-1]["rank_matched"]))

    # Costs: lookup throughput and the share of a geep run spent predicting and sorting.
    ids, mask = padded_ids(model, encoded, range(N))
    n_keys = int(mask.sum())
    costs = {}
    for ngram in (1, 2):
        sources["held-out"].build(0.2, ngram, "mean")
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            model.exit_table.predict_distribution(ids, mask)
            times.append(time.perf_counter() - start)
        costs[f"lookup_tokens_per_s_ngram{ngram}"] = n_keys / statistics.median(times)
    sources["held-out"].build(0.2, 1, "mean")
    model.config.exit_table = {**(model.config.exit_table or {}), "build_threshold": 0.2}
    predict_t, total_t = [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        with torch.inference_mode():
            pred = predicted_layers(model, exit_distribution(model.exit_table, encoded, model.pad_token_id), 0.5)
            lengths_now, pred = token_lengths(encoded), pred.tolist()
            sorted(range(N), key=lambda i: (pred[i], lengths_now[i]))  # the buckets' order
        predict_t.append(time.perf_counter() - start)
        start = time.perf_counter()
        run_policy(model, encoded, "geep", 0.5, batch_size=args.batch_size)
        total_t.append(time.perf_counter() - start)
    costs["predict_and_sort_seconds"] = statistics.median(predict_t)
    costs["geep_run_seconds"] = statistics.median(total_t)
    costs["predict_and_sort_share"] = costs["predict_and_sort_seconds"] / costs["geep_run_seconds"]

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    result = {"model": args.model, "data": args.data, "N": N, "full_accuracy": full_acc, "points": points,
              "baselines": baselines, "random_sd": random_sd, "variants": variants, "costs": costs,
              "threads": torch.get_num_threads()}
    (out / "exit_predictor.json").write_text(json.dumps(result, indent=2))
    lines = [f"# Exit predictor on {args.data} ({N} rows), model {args.model}", "",
             f"Full model accuracy {100 * full_acc:.2f}%. Accuracy (%) at FastBERT's exact exit histogram:", "",
             "| predictor | " + " | ".join(f"{pt['mean_layer']:.2f} layers" for pt in points) + " |",
             "|---|" + "---|" * len(points),
             "| fastbert (dynamic) | " + " | ".join(f"{100 * pt['fastbert']:.2f}" for pt in points) + " |",
             "| oracle-rank | " + " | ".join(f"{100 * a:.2f}" for a in baselines["oracle-rank"]) + " |",
             "| random (mean ± sd) | " + " | ".join(f"{100 * a:.2f} ± {100 * s:.2f}"
                                                  for a, s in zip(baselines["random"], random_sd)) + " |",
             "| length | " + " | ".join(f"{100 * a:.2f}" for a in baselines["length"]) + " |"]
    for v in variants:
        name = f"table: {v['source']}, S={v['build_threshold']}, ngram {v['ngram']}, {v['combine']}"
        lines.append(f"| {name} | " + " | ".join(f"{100 * a:.2f}" for a in v["rank_matched"]) + " |")
    lines += ["", "The same variants with their own tau-quantile predictions, at FastBERT's mean exit layer "
              "(interpolated; - where the tau curve does not reach it):", "",
              "| predictor | " + " | ".join(f"{pt['mean_layer']:.2f} layers" for pt in points) + " |",
              "|---|" + "---|" * len(points)]
    for v in variants:
        name = f"table: {v['source']}, S={v['build_threshold']}, ngram {v['ngram']}, {v['combine']}"
        lines.append(f"| {name} | " + " | ".join("-" if a is None else f"{100 * a:.2f}" for a in v["geep_tau"])
                     + " |")
    lines += ["", f"Costs ({torch.get_num_threads()} threads): lookup "
              f"{costs['lookup_tokens_per_s_ngram1']:.3g} tokens/s (unigram), "
              f"{costs['lookup_tokens_per_s_ngram2']:.3g} tokens/s (bigram); predicting + sorting "
              f"{1000 * costs['predict_and_sort_seconds']:.1f} ms of a {1000 * costs['geep_run_seconds']:.0f} ms "
              f"geep run ({100 * costs['predict_and_sort_share']:.2f}%); table build from "
              f"{variants[0]['rows']} rows: {1000 * variants[0]['build_seconds']:.1f} ms (unigram), "
              f"{1000 * variants[1]['build_seconds']:.1f} ms (bigram), after one all-exits pass over them."]
    (out / "exit_predictor.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
