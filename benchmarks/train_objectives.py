"""Training objectives compared: per-exit TEST accuracy and training wall time on the packaged sets.

Methods, each on the same training rows (the packaged ``train`` split, or a seeded stratified subset of
``--max-train-samples``), the same dev rows (the ``dev`` split, which picks each run's kept epoch), the same
batch order, learning rates and seed:

- ``bert``: plain ``BertForSequenceClassification`` fine-tuning (its pooler + linear classifier on the first
  token), ``--epochs`` epochs. Its classifier and pooler train at ``--head-lr``, the encoder at ``--lr`` (the
  same recipe the multi-exit models get). It has one exit, the last layer's.
- ``geep``, ``pabee``: one stage of ``--epochs`` epochs.
- ``fastbert``, ``deebert``: ``--epochs`` epochs of fine-tuning, then ``--distil-epochs`` epochs for the exits.

A method is ``NAME[:RECIPE][@EPOCHS[+DISTIL]]``: ``geep:hinton`` is the geep objective under a recipe
(``geep.modeling.objectives.RECIPES``; a recipe whose epochs are "passes" trains ``EPOCHS + DISTIL`` epochs), and
``fastbert@4+1`` overrides ``--epochs`` / ``--distil-epochs`` for that method. ``--seeds`` repeats every method
with each training seed (initialisation and batch order; the data subsets stay those of ``--data-seed``).

Cost: the training loop including the per-epoch dev evaluation (both for ``bert`` and the others), not model
loading or tokenising, as the process's CPU time (``time.process_time``: what a shared machine disturbs far less
than wall time; run with ``--threads 1``) and as wall time. ``passes`` counts the epochs over the training rows,
every stage's together. Each run is written to ``<output>/<name>-runs/<data>-<method>-seed<seed>.json`` as it finishes
and is reused by a later call (``--rerun`` to redo), so a crash loses one run. Writes ``<output>/<name>.json`` and
``<output>/<name>.md`` (``--name``, default ``train_objectives``) over every run asked for.

    python benchmarks/train_objectives.py --data bbc tweets --output runs/bench-train
    python benchmarks/train_objectives.py --data bbc --max-train-samples 64 --epochs 1 --output /tmp/b  # smoke
    nice -n 19 taskset -c 1 python benchmarks/train_objectives.py --data tweets --max-train-samples 2000 \
        --max-eval-samples 1000 --max-length 64 --seeds 42 43 44 --methods fastbert geep:paper geep:hinton \
        --name train_recipes --output benchmarks/results/tweets
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from transformers import AutoModelForSequenceClassification, AutoTokenizer, get_linear_schedule_with_warmup

from geep.data import build_label_names, encode_labels, get_columns, load_dataset_spec, stratified_subset
from geep.io import write_text_atomic
from geep.modeling import MultiExitClassifier, resolve_model_path
from geep.modeling.objectives import RECIPES, get_objective
from geep.tokens import pad_batch
from geep.training import EncodedData, TrainingArguments, evaluate, train

logger = logging.getLogger("train_objectives")
METHODS = ("bert", "geep", "fastbert", "deebert", "pabee")


@dataclass(frozen=True)
class Method:
    """One method to train: objective (or ``bert``), the geep recipe, and its epoch counts."""

    spec: str
    objective: str
    recipe: str | None
    epochs: int
    distil_epochs: int

    @classmethod
    def parse(cls, spec: str, epochs: int, distil_epochs: int) -> "Method":
        """``NAME[:RECIPE][@EPOCHS[+DISTIL]]`` -> Method; the defaults are ``--epochs`` / ``--distil-epochs``."""
        head, _, counts = spec.partition("@")
        objective, _, recipe = head.partition(":")
        if objective not in METHODS:
            raise SystemExit(f"error: unknown method {objective!r} in {spec!r}; choose one of {', '.join(METHODS)}")
        if recipe and (objective != "geep" or recipe not in RECIPES):
            raise SystemExit(f"error: {spec!r}: recipes ({', '.join(RECIPES)}) apply to geep only")
        if counts:
            first, _, second = counts.partition("+")
            try:
                epochs, distil_epochs = int(first), int(second) if second else distil_epochs
            except ValueError:
                raise SystemExit(f"error: {spec!r}: epochs are @EPOCHS or @EPOCHS+DISTIL") from None
        return cls(spec, objective, recipe or None, epochs, distil_epochs)

    def passes(self) -> int:
        """Epochs over the training rows, every stage's together."""
        if self.objective in ("bert", "pabee"):
            return self.epochs
        if self.objective in ("fastbert", "deebert"):
            return self.epochs + self.distil_epochs
        return self.epochs + self.distil_epochs if get_objective("geep", self.recipe).stages[0].epochs == "passes" \
            else self.epochs

    def file_name(self, data: str, seed: int) -> str:
        return f"{data}-{self.spec.replace(':', '-').replace('@', '-e').replace('+', '-d')}-seed{seed}.json"


def load_split(name: str, split: str, label_names: list[str] | None = None):
    cols = get_columns(load_dataset_spec(f"{name}:{split}"), "text", None, "label", source=f"{name}:{split}",
                       require_labels=True)
    return cols.texts, cols.labels


def encode(tokenizer, texts: list[str], label_ids: list[int], max_length: int) -> EncodedData:
    return EncodedData(dict(tokenizer(texts, truncation=True, max_length=max_length)), torch.tensor(label_ids))


def train_plain_bert(path: Path, names: list[str], train_data: EncodedData, dev_data: EncodedData,
                     test_data: EncodedData, args: argparse.Namespace, device: torch.device, method: Method,
                     seed: int) -> dict:
    """Ordinary fine-tuning of BertForSequenceClassification; the best epoch by dev accuracy is kept."""
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=len(names), id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)}
    ).to(device)
    heads = [p for n, p in model.named_parameters() if n.startswith("classifier") or ".pooler." in n]
    head_ids = {id(p) for p in heads}
    backbone = [p for p in model.parameters() if id(p) not in head_ids]
    optimizer = torch.optim.AdamW([{"params": backbone, "lr": args.lr}, {"params": heads, "lr": args.head_lr}],
                                  weight_decay=0.01)
    loader = DataLoader(range(len(train_data)), batch_size=args.batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(seed), collate_fn=list)
    total = len(loader) * method.epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, int(0.1 * total), total)

    @torch.inference_mode()
    def accuracy(data: EncodedData) -> float:
        model.eval()
        correct = 0
        for start in range(0, len(data), 64):
            rows = list(range(start, min(start + 64, len(data))))
            batch = pad_batch(data.encoded, rows, 0, device)
            correct += (model(**batch).logits.argmax(-1).cpu() == data.labels[rows]).sum().item()
        return correct / len(data)

    best, best_state = -1.0, None
    started, cpu_started = time.perf_counter(), time.process_time()
    for _ in range(method.epochs):
        model.train()
        for rows in loader:
            batch = pad_batch(train_data.encoded, rows, 0, device)
            loss = torch.nn.functional.cross_entropy(model(**batch).logits, train_data.labels[rows].to(device))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        dev = accuracy(dev_data)
        if dev > best:
            best, best_state = dev, {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    model.load_state_dict(best_state)
    num_layers = model.config.num_hidden_layers
    return {"test_accuracy": {str(num_layers): accuracy(test_data)}, "dev_accuracy": {str(num_layers): best},
            "train_seconds": seconds, "train_cpu_seconds": cpu_seconds, "epochs": method.epochs}


def train_multi_exit(path: Path, names: list[str], method: Method, train_data: EncodedData,
                     dev_data: EncodedData, test_data: EncodedData, args: argparse.Namespace, seed: int) -> dict:
    torch.manual_seed(seed)
    model = MultiExitClassifier.from_encoder(path, names, objective=method.objective, recipe=method.recipe,
                                             head=args.head, pooling=args.pooling, max_length=args.max_length)
    targs = TrainingArguments(epochs=method.epochs, distil_epochs=method.distil_epochs, batch_size=args.batch_size,
                              lr=args.lr, head_lr=args.head_lr, seed=seed, device=args.device,
                              show_progress_bar=False)
    result = train(model, train_data, dev_data, targs)
    device = torch.device("cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu")
    model.to(device)
    test = evaluate(model, test_data, 64, device)
    objective = get_objective(method.objective, model.config.recipe)
    return {"test_accuracy": test, "dev_accuracy": result.dev_accuracy, "train_seconds": result.train_seconds,
            "train_cpu_seconds": result.train_cpu_seconds, "epochs": method.epochs,
            "distil_epochs": method.distil_epochs if len(objective.stages) > 1 else 0,
            "recipe": objective.recipe.to_dict() if objective.recipe else None,
            "best_epochs": result.best_epochs, "history": result.to_dict()["history"]}


def summarise(runs: dict[int, dict]) -> dict:
    """Mean over seeds of one method's runs ({seed: run}): per-exit test accuracy, teacher, mean over exits, cost."""
    def mean_sd(values: list[float]) -> tuple[float, float]:
        return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0

    first = next(iter(runs.values()))
    exits = sorted(first["test_accuracy"], key=int)
    teacher = mean_sd([r["test_accuracy"][exits[-1]] for r in runs.values()])
    over_exits = mean_sd([statistics.fmean(r["test_accuracy"].values()) for r in runs.values()])
    return {"seeds": sorted(runs), "passes": first["passes"],
            "test_accuracy": {k: statistics.fmean(r["test_accuracy"][k] for r in runs.values()) for k in exits},
            "teacher": teacher, "mean_over_exits": over_exits,
            "train_cpu_seconds": statistics.fmean(r["train_cpu_seconds"] for r in runs.values()),
            "train_seconds": statistics.fmean(r["train_seconds"] for r in runs.values())}


def markdown(results: dict, config: dict) -> str:
    """Every run, then the mean over seeds of each method, per data set."""
    pct = lambda x: f"{100 * x:.2f}"  # noqa: E731
    lines = ["# Training objectives: per-exit test accuracy and training cost", "",
             f"Model `{config['model']}`; batch {config['batch_size']}, lr {config['lr']}, head lr "
             f"{config['head_lr']}, heads `{config['head']}` with `{config['pooling']}` pooling, max length "
             f"{config['max_length']}; training seeds {', '.join(map(str, config['seeds']))} (data subsets: seed "
             f"{config['data_seed']}); {config['threads']} torch thread(s); device {config['device']}.",
             "`passes`: epochs over the training rows, every stage's together. Cost: CPU time of the training "
             "process (and wall time), the loop with its per-epoch dev evaluation.", ""]
    for data, methods in results.items():
        sizes = config["sizes"][data]
        layers = sorted({int(k) for runs in methods.values() for r in runs.values() for k in r["test_accuracy"]})
        head = " | ".join(f"exit {k}" for k in layers)
        lines += [f"## {data} (train {sizes['train']}, dev {sizes['dev']}, test {sizes['test']})", "",
                  "Every run (test accuracy, %):", "",
                  f"| method | seed | passes | {head} | mean over exits | CPU s | wall s |",
                  "|---|---:|---:|" + "---:|" * (len(layers) + 3)]
        for method, runs in methods.items():
            for seed, r in runs.items():
                cells = [pct(r["test_accuracy"][str(k)]) if str(k) in r["test_accuracy"] else "" for k in layers]
                mean = statistics.fmean(r["test_accuracy"].values())
                lines.append(f"| {method} | {seed} | {r['passes']} | " + " | ".join(cells) +
                             f" | {pct(mean)} | {r['train_cpu_seconds']:.0f} | {r['train_seconds']:.0f} |")
        summaries = {m: summarise(runs) for m, runs in methods.items()}
        reference = summaries.get("fastbert")
        lines += ["", "Mean over seeds (test accuracy, %; ± the standard deviation over seeds):", "",
                  f"| method | seeds | passes | {head} | teacher | mean over exits | CPU s | CPU / fastbert's |",
                  "|---|---:|---:|" + "---:|" * (len(layers) + 4)]
        for method, m in summaries.items():
            cells = [pct(m["test_accuracy"][str(k)]) if str(k) in m["test_accuracy"] else "" for k in layers]
            ratio = f"{m['train_cpu_seconds'] / reference['train_cpu_seconds']:.2f}" if reference else ""
            lines.append(f"| {method} | {len(m['seeds'])} | {m['passes']} | " + " | ".join(cells) +
                         f" | {pct(m['teacher'][0])} ± {pct(m['teacher'][1])} | {pct(m['mean_over_exits'][0])} ± "
                         f"{pct(m['mean_over_exits'][1])} | {m['train_cpu_seconds']:.0f} | {ratio} |")
        lines.append("")
    return "\n".join(lines)


def load_data(name: str, tokenizer, args: argparse.Namespace) -> tuple[list[str], dict[str, EncodedData]]:
    """Label names and the encoded train/dev/test rows (seeded stratified subsets with ``--data-seed``)."""
    texts, labels = load_split(name, "train")
    names = build_label_names(labels)
    if args.max_train_samples:
        keep = stratified_subset(labels, args.max_train_samples, args.data_seed)
        texts, labels = [texts[i] for i in keep], [labels[i] for i in keep]
    splits = {"train": (texts, labels)}
    for split in ("dev", "test"):
        t, y = load_split(name, split)
        if args.max_eval_samples:
            keep = stratified_subset(y, args.max_eval_samples, args.data_seed)
            t, y = [t[i] for i in keep], [y[i] for i in keep]
        splits[split] = (t, y)
    return names, {s: encode(tokenizer, t, encode_labels(y, names, source=f"{name}:{s}"), args.max_length)
                   for s, (t, y) in splits.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", nargs="+", default=["bbc", "tweets"], choices=["bbc", "tweets"])
    p.add_argument("--methods", nargs="+", default=list(METHODS), metavar="NAME[:RECIPE][@E[+D]]",
                   help=f"methods: {', '.join(METHODS)}; geep:RECIPE with RECIPE in {', '.join(RECIPES)}")
    p.add_argument("--model", default="minilm")
    p.add_argument("--max-train-samples", type=int, default=None)
    p.add_argument("--max-eval-samples", type=int, default=None, help="cap dev and test (smoke runs)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--distil-epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--head-lr", type=float, default=1e-3)
    p.add_argument("--head", default="attention", choices=["attention", "linear"])
    p.add_argument("--pooling", default="mean", choices=["first", "mean"])
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--seeds", type=int, nargs="+", default=[42], help="training seeds; every method runs with each")
    p.add_argument("--data-seed", type=int, default=42, help="seed of the train/dev/test subsets")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None)
    p.add_argument("--name", default="train_objectives", help="stem of the summary files")
    p.add_argument("--rerun", action="store_true", help="redo runs already written under <output>/<name>-runs")
    p.add_argument("--output", required=True)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    if args.threads:
        torch.set_num_threads(args.threads)
    methods = [Method.parse(spec, args.epochs, args.distil_epochs) for spec in args.methods]

    path = resolve_model_path(args.model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    device = torch.device("cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu")
    config = {k: v for k, v in vars(args).items() if k not in ("output", "rerun")} | {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.machine()}, {os.cpu_count()} cores)",
        "threads": torch.get_num_threads(), "torch": torch.__version__, "sizes": {}}
    out = Path(args.output)
    results: dict[str, dict] = {}
    for name in args.data:
        names, data = load_data(name, tokenizer, args)
        config["sizes"][name] = {s: len(d) for s, d in data.items()}
        results[name] = {m.spec: {} for m in methods}
        for seed in args.seeds:
            for method in methods:
                run_file = out / f"{args.name}-runs" / method.file_name(name, seed)
                if run_file.is_file() and not args.rerun:
                    logger.info("== %s: %s, seed %d: reusing %s", name, method.spec, seed, run_file)
                    results[name][method.spec][seed] = json.loads(run_file.read_text())
                    continue
                logger.info("== %s: %s, seed %d", name, method.spec, seed)
                if method.objective == "bert":
                    r = train_plain_bert(path, names, data["train"], data["dev"], data["test"], args, device,
                                         method, seed)
                else:
                    r = train_multi_exit(path, names, method, data["train"], data["dev"], data["test"], args, seed)
                r |= {"method": method.spec, "objective": method.objective, "seed": seed, "passes": method.passes(),
                      "sizes": config["sizes"][name], "threads": torch.get_num_threads()}
                logger.info("%s %s seed %d: test %s, %.1f s CPU, %.1f s wall", name, method.spec, seed,
                            r["test_accuracy"], r["train_cpu_seconds"], r["train_seconds"])
                run_file.parent.mkdir(parents=True, exist_ok=True)
                write_text_atomic(run_file, json.dumps(r, indent=2) + "\n")  # a crash mid-write leaves no half a run
                results[name][method.spec][seed] = r
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps({"config": config, "results": results}, indent=2) + "\n")
    (out / f"{args.name}.md").write_text(markdown(results, config))
    print(markdown(results, config))


if __name__ == "__main__":
    main()
