"""Training objectives compared: per-exit TEST accuracy and training wall time on the packaged sets.

Methods, each on the same training rows (the packaged ``train`` split, or a seeded stratified subset of
``--max-train-samples``), the same dev rows (the ``dev`` split, which picks each run's kept epoch), the same
batch order, learning rates and seed:

- ``bert``: plain ``BertForSequenceClassification`` fine-tuning (its pooler + linear classifier on the first
  token), ``--epochs`` epochs. Its classifier and pooler train at ``--head-lr``, the encoder at ``--lr`` (the
  same recipe the multi-exit models get). It has one exit, the last layer's.
- ``geep``, ``pabee``: one stage of ``--epochs`` epochs.
- ``fastbert``, ``deebert``: ``--epochs`` epochs of fine-tuning, then ``--distil-epochs`` epochs for the exits.

Wall time covers the training loop including the per-epoch dev evaluation (both for ``bert`` and the others),
not model loading or tokenising. Writes ``<output>/train_objectives.json`` and ``<output>/train_objectives.md``.

    python benchmarks/train_objectives.py --data bbc tweets --output runs/bench-train
    python benchmarks/train_objectives.py --data bbc --max-train-samples 64 --epochs 1 --output /tmp/b  # smoke
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from transformers import AutoModelForSequenceClassification, AutoTokenizer, get_linear_schedule_with_warmup

from geep.data import build_label_names, encode_labels, get_columns, load_dataset_spec, stratified_subset
from geep.modeling import MultiExitClassifier, resolve_model_path
from geep.tokens import pad_batch
from geep.training import EncodedData, TrainingArguments, evaluate, train

logger = logging.getLogger("train_objectives")
METHODS = ("bert", "geep", "fastbert", "deebert", "pabee")


def load_split(name: str, split: str, label_names: list[str] | None = None):
    cols = get_columns(load_dataset_spec(f"{name}:{split}"), "text", None, "label", source=f"{name}:{split}",
                       require_labels=True)
    return cols.texts, cols.labels


def encode(tokenizer, texts: list[str], label_ids: list[int], max_length: int) -> EncodedData:
    return EncodedData(dict(tokenizer(texts, truncation=True, max_length=max_length)), torch.tensor(label_ids))


def train_plain_bert(path: Path, names: list[str], train_data: EncodedData, dev_data: EncodedData,
                     test_data: EncodedData, args: argparse.Namespace, device: torch.device) -> dict:
    """Ordinary fine-tuning of BertForSequenceClassification; the best epoch by dev accuracy is kept."""
    torch.manual_seed(args.seed)
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=len(names), id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)}
    ).to(device)
    heads = [p for n, p in model.named_parameters() if n.startswith("classifier") or ".pooler." in n]
    head_ids = {id(p) for p in heads}
    backbone = [p for p in model.parameters() if id(p) not in head_ids]
    optimizer = torch.optim.AdamW([{"params": backbone, "lr": args.lr}, {"params": heads, "lr": args.head_lr}],
                                  weight_decay=0.01)
    loader = DataLoader(range(len(train_data)), batch_size=args.batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(args.seed), collate_fn=list)
    total = len(loader) * args.epochs
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
    started = time.perf_counter()
    for _ in range(args.epochs):
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
    seconds = time.perf_counter() - started
    model.load_state_dict(best_state)
    num_layers = model.config.num_hidden_layers
    return {"test_accuracy": {str(num_layers): accuracy(test_data)}, "dev_accuracy": {str(num_layers): best},
            "train_seconds": seconds, "epochs": args.epochs}


def train_multi_exit(path: Path, names: list[str], objective: str, train_data: EncodedData,
                     dev_data: EncodedData, test_data: EncodedData, args: argparse.Namespace) -> dict:
    torch.manual_seed(args.seed)
    model = MultiExitClassifier.from_encoder(path, names, objective=objective, head=args.head,
                                             pooling=args.pooling, max_length=args.max_length)
    targs = TrainingArguments(epochs=args.epochs, distil_epochs=args.distil_epochs, batch_size=args.batch_size,
                              lr=args.lr, head_lr=args.head_lr, seed=args.seed, device=args.device,
                              show_progress_bar=False)
    result = train(model, train_data, dev_data, targs)
    device = torch.device("cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu")
    model.to(device)
    test = evaluate(model, test_data, 64, device)
    two_stage = objective in ("fastbert", "deebert")
    return {"test_accuracy": test, "dev_accuracy": result.dev_accuracy, "train_seconds": result.train_seconds,
            "epochs": args.epochs, "distil_epochs": args.distil_epochs if two_stage else 0,
            "best_epochs": result.best_epochs}


def markdown(results: dict, config: dict) -> str:
    lines = [f"# Training objectives: per-exit test accuracy and training wall time",
             "", f"Model `{config['model']}`; {config['epochs']} epoch(s) (+{config['distil_epochs']} distil epoch(s) "
             f"for fastbert/deebert); batch {config['batch_size']}, lr {config['lr']}, head lr {config['head_lr']}, "
             f"heads `{config['head']}` with `{config['pooling']}` pooling, max length {config['max_length']}, "
             f"seed {config['seed']}; device {config['device']}.", ""]
    for data, methods in results.items():
        sizes = config["sizes"][data]
        layers = sorted({int(k) for m in methods.values() for k in m["test_accuracy"]})
        lines += [f"## {data} (train {sizes['train']}, dev {sizes['dev']}, test {sizes['test']})", "",
                  "| method | " + " | ".join(f"exit {k}" for k in layers) + " | train time (s) |",
                  "|---|" + "---:|" * (len(layers) + 1)]
        for method, r in methods.items():
            cells = [f"{r['test_accuracy'][str(k)]:.4f}" if str(k) in r["test_accuracy"] else "" for k in layers]
            lines.append(f"| {method} | " + " | ".join(cells) + f" | {r['train_seconds']:.1f} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", nargs="+", default=["bbc", "tweets"], choices=["bbc", "tweets"])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
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
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--device", choices=["cpu", "cuda"], default=None)
    p.add_argument("--output", required=True)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()

    path = resolve_model_path(args.model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    device = torch.device("cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu")
    config = {k: v for k, v in vars(args).items() if k != "output"} | {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.machine()}, {os.cpu_count()} cores)",
        "torch": torch.__version__, "sizes": {}}
    results: dict[str, dict] = {}
    for name in args.data:
        texts, labels = load_split(name, "train")
        names = build_label_names(labels)
        if args.max_train_samples:
            keep = stratified_subset(labels, args.max_train_samples, args.seed)
            texts, labels = [texts[i] for i in keep], [labels[i] for i in keep]
        splits = {"train": (texts, labels)}
        for split in ("dev", "test"):
            t, y = load_split(name, split)
            if args.max_eval_samples:
                keep = stratified_subset(y, args.max_eval_samples, args.seed)
                t, y = [t[i] for i in keep], [y[i] for i in keep]
            splits[split] = (t, y)
        data = {s: encode(tokenizer, t, encode_labels(y, names, source=f"{name}:{s}"), args.max_length)
                for s, (t, y) in splits.items()}
        config["sizes"][name] = {s: len(d) for s, d in data.items()}
        results[name] = {}
        for method in args.methods:
            logger.info("== %s: %s", name, method)
            if method == "bert":
                r = train_plain_bert(path, names, data["train"], data["dev"], data["test"], args, device)
            else:
                r = train_multi_exit(path, names, method, data["train"], data["dev"], data["test"], args)
            logger.info("%s %s: test %s, %.1f s", name, method, r["test_accuracy"], r["train_seconds"])
            results[name][method] = r
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_objectives.json").write_text(json.dumps({"config": config, "results": results}, indent=2) + "\n")
    (out / "train_objectives.md").write_text(markdown(results, config))
    print(markdown(results, config))


if __name__ == "__main__":
    main()
