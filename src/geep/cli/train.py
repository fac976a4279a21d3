"""`geep train`: train a multi-exit classifier on a file or a packaged data set.

Everything the user can get wrong (data, columns, labels, flags, the output directory) is checked before the
first training step, so a bad run fails fast and leaves no half-written output directory.

The task (``--task``: classification, multi-label, regression) is read from the data where it is unambiguous: a label
column of floats is regression, a column of lists multi-label, anything else classification (a CSV reads every column
as text: pass ``--task`` for its scores or joined label names). What was chosen is logged and written to the model
card. ``--exit-module lte`` adds BERxiT's learned exit, trained beside every objective.

Rows of ``--train`` are split three ways, never overlapping: the rows that take gradient steps; the exit-table
slice (``--table-fraction`` of them, seeded and stratified, saved to ``table_data.jsonl`` for
``geep build-table``; none with ``--table-data``); and, without ``--dev``, a seeded stratified 10% of what
remains, used as dev data.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from geep.training.card import format_accuracy_table, write_model_card
from geep.cli.build_table import TABLE_DATA_NAME, add_table_options, check_table_options
from geep.modeling.config import EXIT_MODULES, HEAD_KINDS, POOLINGS
from geep.data import ColumnData, TokenData, encode_labels, get_columns, get_token_columns, is_token_data, \
    load_dataset_spec, make_windows, stratified_split, stratified_subset
from geep.data.token_data import WORD_SEPARATOR
from geep.errors import GeepError
from geep.modeling.objectives import DEFAULT_RECIPE, OBJECTIVES, RECIPES, get_objective
from geep.modeling.token_hash import HASH_KINDS
from geep.training.loop import MAX_SEED
from geep.tasks import TASKS, Task, get_task
from geep.tasks.multi_label import DEFAULT_SEPARATOR

logger = logging.getLogger(__name__)

ARGS_NAME = "training_args.json"
DEV_FRACTION = 0.1  # held out of --train when no --dev is given


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train", help="train a multi-exit classifier",
        description="Train a multi-exit (early-exit) classifier on a BERT-style encoder.",
    )
    p.add_argument("--model", required=True, help="encoder directory, a fine-tuned *ForSequenceClassification "
                   "directory (its classifier becomes the teacher), or a packaged name: minilm")
    p.add_argument("--train", required=True, metavar="DATA", help="FILE (.csv .tsv .json .jsonl .parquet, a "
                   "saved datasets dir) or a packaged NAME[:split] (bbc, tweets)")
    p.add_argument("--dev", metavar="DATA", help="dev data (default: a seeded stratified 10%% of --train)")
    p.add_argument("--text-column", default="text")
    p.add_argument("--text-pair-column", default=None, help="second text column, for sentence pairs")
    p.add_argument("--label-column", default="label")
    p.add_argument("--tokens-column", default="tokens", help="token classification: the column of each sentence's "
                   "words (a list; a .conll file's first column)")
    p.add_argument("--tags-column", default="tags", help="token classification: the column of each word's tag (a "
                   "list of names, or of ids a ClassLabel feature names; a .conll file's last column)")
    p.add_argument("--task", default="auto", choices=["auto", *TASKS],
                   help="what the labels are: classification (one label per text), multi-label (a list of labels, "
                   "or names joined by --label-separator), regression (a number), token-classification (a tag per "
                   "word); auto (default): token-classification for a list of words beside a list of tags (a .conll "
                   "file), regression for a column of floats, multi-label for a column of lists, else "
                   "classification")
    p.add_argument("--label-separator", default=None, metavar="SEP",
                   help=f"multi-label: the separator of a label column of joined names (default {DEFAULT_SEPARATOR!r})")
    p.add_argument("--exit-module", default=None, choices=list(EXIT_MODULES),
                   help="lte: BERxiT's learning-to-exit module, one small module shared by the exits that learns "
                   "how likely each exit is already right (policy lte); ponder: a halting head per exit, "
                   "trained by --objective ponder (which adds it by itself; policy ponder)")
    p.add_argument("--encoding", default=None, help="encoding of CSV/TSV/JSON files (default UTF-8)")
    p.add_argument("--objective", default="geep", choices=list(OBJECTIVES))
    p.add_argument("--recipe", default=None, choices=list(RECIPES),
                   help=f"geep only: how its one-step loss is weighted and how long it trains (default "
                   f"{DEFAULT_RECIPE}): " + "; ".join(f"{r.name}: {r.description}" for r in RECIPES.values()))
    p.add_argument("--hash", default=None, choices=list(HASH_KINDS),
                   help="--objective hashee only: the token-to-layer hash (HashEE): frequency (default: the training "
                   "rows' most frequent tokens exit first) or random (seeded by --seed)")
    p.add_argument("--hash-buckets", type=int, default=None, metavar="N",
                   help="--objective hashee only: buckets of the hash, bucket b exiting at layer 1 + b * (L // N) "
                   "(default L: one per layer)")
    p.add_argument("--head", default="attention", choices=list(HEAD_KINDS), help="exit head kind")
    p.add_argument("--pooling", default="auto", choices=["auto", *POOLINGS],
                   help="exit heads' pooling; auto (default): the backbone's sentence-transformers pooling "
                   "(1_Pooling/config.json: mean tokens -> mean, CLS token -> first), else first")
    p.add_argument("--exit-layers", default=None, metavar="K,K,..",
                   help="layers with an exit (default: every layer; the last is always one)")
    p.add_argument("--num-layers", type=int, default=None, metavar="K",
                   help="a static baseline: the encoder cut to its first K layers (1..L) and fine-tuned as a whole "
                   "model, with one exit at K (unless --exit-layers names more); `geep bench` draws it beside "
                   "multi-exit models")
    p.add_argument("--epochs", type=int, default=2, help="epochs of the first stage (a geep recipe that matches "
                   "passes trains --epochs + --distil-epochs: as many passes over the data as fastbert)")
    p.add_argument("--distil-epochs", type=int, default=1, help="epochs of a second (distillation) stage")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=5e-5, help="backbone learning rate")
    p.add_argument("--head-lr", type=float, default=1e-3, help="exit heads' learning rate")
    p.add_argument("--warmup-ratio", type=float, default=0.1)
    p.add_argument("--max-length", type=int, default=None, help="tokens per text (pair) after truncation "
                   "(default: the smallest of 128 and what the model, its tokenizer and a sentence-transformers "
                   "max_seq_length allow)")
    p.add_argument("--max-train-samples", type=int, default=None,
                   help="train on a seeded stratified subset of this many rows of --train")
    p.add_argument("--max-dev-samples", type=int, default=None,
                   help="evaluate on a seeded stratified subset of this many dev rows")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--freeze-backbone", action="store_true", help="never train the backbone (nor a fine-tuned "
                   "model's teacher): only the exits learn")
    p.add_argument("--table-fraction", type=float, default=0.1,
                   help="fraction of --train held out (no gradient step) for the exit table (0: none)")
    p.add_argument("--table-data", metavar="DATA", default=None,
                   help="data for the exit table instead of holding out --table-fraction of --train")
    add_table_options(p)
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when there is one")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--output", required=True, metavar="DIR")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty --output")
    p.set_defaults(func=run)


@dataclass
class Slice:
    """Rows of one role (train, dev, table): texts, pairs, label names, and where they came from."""

    texts: list[str]
    pairs: list[str] | None
    labels: list[str]
    source: str

    @classmethod
    def take(cls, data: ColumnData, rows: list[int], source: str) -> "Slice":
        return cls([data.texts[i] for i in rows], None if data.text_pairs is None else
                   [data.text_pairs[i] for i in rows], [data.labels[i] for i in rows], source)

    def __len__(self) -> int:
        return len(self.texts)


def parse_exit_layers(value: str | None) -> list[int]:
    """'1,2,4' -> [1, 2, 4]; None -> [] (every layer)."""
    if value is None:
        return []
    try:
        layers = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise GeepError(f"--exit-layers takes comma-separated layer numbers such as 1,2,4; got {value!r}") from None
    if not layers:
        raise GeepError(f"--exit-layers names no layer: {value!r}")
    return layers


def _check_flags(args: argparse.Namespace) -> None:
    checks = [
        (args.epochs >= 0, f"--epochs must be >= 0, got {args.epochs}"),
        (args.distil_epochs >= 0, f"--distil-epochs must be >= 0, got {args.distil_epochs}"),
        (args.batch_size >= 1, f"--batch-size must be >= 1, got {args.batch_size}"),
        (math.isfinite(args.lr) and args.lr > 0, f"--lr must be a finite number above 0, got {args.lr}"),
        (math.isfinite(args.head_lr) and args.head_lr > 0,
         f"--head-lr must be a finite number above 0, got {args.head_lr}"),
        (0 <= args.seed <= MAX_SEED, f"--seed must be in 0..{MAX_SEED}, got {args.seed}"),
        (0 <= args.warmup_ratio < 1, f"--warmup-ratio must lie in [0, 1), got {args.warmup_ratio}"),
        (args.max_length is None or args.max_length >= 2, f"--max-length must be >= 2, got {args.max_length}"),
        (args.max_train_samples is None or args.max_train_samples >= 2,
         f"--max-train-samples must be >= 2, got {args.max_train_samples}"),
        (args.max_dev_samples is None or args.max_dev_samples >= 1,
         f"--max-dev-samples must be >= 1, got {args.max_dev_samples}"),
        (0 <= args.table_fraction < 1, f"--table-fraction must lie in [0, 1), got {args.table_fraction}"),
        (args.device != "cuda" or torch.cuda.is_available(), "--device cuda, but torch sees no CUDA device"),
        (args.recipe is None or args.objective == "geep",
         f"--recipe applies to --objective geep only; got --objective {args.objective}"),
        (args.exit_module != "ponder" or args.objective == "ponder",
         f"--exit-module ponder: the halting heads are trained by --objective ponder, not {args.objective}"),
        (args.objective != "ponder" or args.exit_module in (None, "ponder"),
         f"--objective ponder trains its own halting heads (--exit-module ponder), not --exit-module "
         f"{args.exit_module}"),
        (args.label_separator is None or args.label_separator != "", "--label-separator must not be empty"),
        ((args.hash is None and args.hash_buckets is None) or args.objective == "hashee",
         f"--hash and --hash-buckets apply to --objective hashee only; got --objective {args.objective}"),
        (args.objective != "hashee" or args.exit_module is None,
         "--objective hashee predicts from the last layer alone: it takes no --exit-module"),
        (args.label_separator is None or args.task in ("auto", "multi-label"),
         f"--label-separator applies to multi-label data only; got --task {args.task}"),
    ]
    for ok, message in checks:
        if not ok:
            raise GeepError(message)


def _read(spec: str, flag: str, args: argparse.Namespace, task: Task | None = None) -> tuple[ColumnData, Task]:
    """The columns of DATA with its labels read as ``task``'s (None: the task ``--task`` names or the data shows).
    Token data: one row per sentence, its words joined by spaces, its labels the words' tags (windows are cut once
    the model's max length is known: :func:`_windows`)."""
    ds = load_dataset_spec(spec, encoding=args.encoding)
    token = is_token_data(ds, args.tokens_column, args.tags_column)
    name = task.name if task is not None else args.task
    if name == "token-classification" or (name == "auto" and token):
        words = get_token_columns(ds, args.tokens_column, args.tags_column, source=f"{flag} {spec}",
                                  require_tags=True)
        if task is None:
            args.task_reason = "--task" if name != "auto" else (
                f"auto: column '{args.tokens_column}' holds words and '{args.tags_column}' their tags")
            logger.info("task: token-classification (%s)", args.task_reason)
            task = get_task("token-classification")()
        return ColumnData([WORD_SEPARATOR.join(s) for s in words.sentences], None, words.tags, None), task
    if token or (args.text_column not in ds.column_names and args.tokens_column in ds.column_names):
        raise GeepError(f"{flag} {spec} holds token-classification data (column '{args.tokens_column}'); pass "
                        "--task token-classification (or auto), not --task " + name)
    cols = get_columns(ds, args.text_column, args.text_pair_column, args.label_column,
                       source=f"{flag} {spec}", require_labels=True)
    if task is None:
        name, why = detect_task(ds, args.label_column, args.task)
        logger.info("task: %s (%s)", name, why)
        args.task_reason = why
        kwargs = {"separator": args.label_separator or DEFAULT_SEPARATOR} if name == "multi-label" else {}
        task = get_task(name)(**kwargs)
    cols.labels = task.read_labels(cols.labels, f"{flag} {spec}")
    return cols, task


def detect_task(ds, label_column: str, given: str) -> tuple[str, str]:
    """(task name, why) for the data: ``given`` unless it is ``auto``; then regression for a column of floats,
    multi-label for a column of lists, classification otherwise."""
    if given != "auto":
        return given, "--task"
    import datasets

    feature = ds.features.get(label_column)
    if isinstance(feature, datasets.Value) and feature.dtype.startswith("float"):
        return "regression", f"auto: label column '{label_column}' holds floats"
    if isinstance(feature, (datasets.Sequence, datasets.List)) or isinstance(feature, list):
        return "multi-label", f"auto: label column '{label_column}' holds lists"
    return "classification", f"auto: label column '{label_column}' holds single labels (pass --task otherwise)"


def split_rows(args: argparse.Namespace, train: ColumnData) -> tuple[Slice, Slice | None, Slice | None]:
    """(train, table, dev) slices of --train; table is None with --table-data or a 0 fraction, dev None with
    --dev. The three never share a row."""
    rows = list(range(len(train.texts)))
    task = getattr(args, "data_task", None)
    strata = train.labels if task is None else task.strata(train.labels)  # what seeded splits keep in proportion
    if args.max_train_samples is not None and args.max_train_samples < len(rows):
        rows = stratified_subset(strata, args.max_train_samples, args.seed)
        logger.info("--max-train-samples: a seeded stratified subset of %d of %d rows", len(rows), len(train.texts))
    source = f"--train {args.train}"
    table = None
    if args.table_data is None and args.table_fraction > 0:
        keep, held = stratified_split([strata[i] for i in rows],
                                      [1 - args.table_fraction, args.table_fraction], args.seed)
        table = Slice.take(train, [rows[i] for i in held], f"{args.table_fraction:g} of {source} (held out)")
        rows = [rows[i] for i in keep]
    dev = None
    if args.dev is None:
        keep, held = stratified_split([strata[i] for i in rows], [1 - DEV_FRACTION, DEV_FRACTION], args.seed)
        dev = Slice.take(train, [rows[i] for i in held], f"{DEV_FRACTION:g} of {source} (held out)")
        rows = [rows[i] for i in keep]
        logger.info("no --dev: holding out a seeded stratified %d%% of the training rows (%d) as dev data",
                    round(DEV_FRACTION * 100), len(dev))
        if len(dev) == 0:
            raise GeepError(f"{source} is too small to hold out dev data; pass --dev")
    if not rows:
        raise GeepError(f"{source}: no training rows left after holding out the table and dev data")
    return Slice.take(train, rows, source), table, dev


def run(args: argparse.Namespace) -> int:
    from geep.cli.outputs import check_output_dir
    from geep.evaluation.build_table import auto_build_threshold, build_table
    from geep.modeling.model import MultiExitClassifier, resolve_model_path
    from geep.training.loop import EncodedData, TrainingArguments, describe_plan, train

    import transformers

    transformers.utils.logging.disable_progress_bar()  # "Loading weights" bars; ours is the training bar
    # ---- validate everything before the first step: flags, output dir, data, labels, model
    _check_flags(args)
    check_table_options(args)
    args.exit_module = args.exit_module or get_objective(args.objective, args.recipe).exit_module  # ponder's heads
    recipe = get_objective(args.objective, args.recipe).recipe  # None unless geep; a recipe elsewhere: an error
    exit_layers = parse_exit_layers(args.exit_layers)
    training_args = TrainingArguments(
        epochs=args.epochs, distil_epochs=args.distil_epochs, batch_size=args.batch_size, lr=args.lr,
        head_lr=args.head_lr, warmup_ratio=args.warmup_ratio, seed=args.seed,
        freeze_backbone=args.freeze_backbone, device=args.device, show_progress_bar=not args.no_progress,
    )
    model_path = resolve_model_path(args.model)
    if args.num_layers is not None:
        _check_num_layers(model_path, args.num_layers)
    check_output_dir(args.output, overwrite=args.overwrite, models=(model_path,),
                     inputs=[spec for spec in (args.train, args.dev, args.table_data) if spec is not None])
    train_cols, data_task = _read(args.train, "--train", args)
    get_objective(args.objective, args.recipe).check_task(data_task.name)  # ensemble, cascade-da: classification
    args.data_task = data_task
    data_labels = data_task.vocabulary(train_cols.labels)
    if data_task.name == "classification" and len(data_labels) < 2:
        raise GeepError(f"--train {args.train} has only one label ({data_labels[0]!r}); a classifier needs two")
    if data_task.name == "multi-label" and len(data_labels) < 2:
        raise GeepError(f"--train {args.train} names {len(data_labels)} label(s) {data_labels}; a multi-label model "
                        "needs two")
    if args.objective == "hashee":  # HashEE has no internal classifiers: one exit, at L, and no exit table
        depth = args.num_layers if args.num_layers is not None else _depth(model_path)
        if exit_layers not in ([], [depth]):
            raise GeepError(f"--objective hashee predicts from the last layer alone (exit {depth}); drop "
                            f"--exit-layers {args.exit_layers}")
        exit_layers = [depth]
        args.table_fraction, args.table_data = 0.0, None
    if data_task.name == "token-classification" and (args.table_fraction > 0 or args.table_data is not None):
        logger.info("token classification: no exit table (its policies, sentee and oracle, predict no layers)")
        args.table_fraction, args.table_data = 0.0, None
    if args.num_layers is not None and exit_layers in ([], [args.num_layers]) and \
            (args.table_fraction > 0 or args.table_data is not None):
        logger.info("--num-layers %d with one exit: no exit table (it would predict the only exit), no rows held "
                    "out for one", args.num_layers)
        args.table_fraction, args.table_data = 0.0, None
    train_slice, table_slice, dev_slice = split_rows(args, train_cols)
    if args.table_data is not None:
        table_cols, _ = _read(args.table_data, "--table-data", args, data_task)
        table_slice = Slice.take(table_cols, list(range(len(table_cols.texts))), f"--table-data {args.table_data}")
    if args.dev is not None:
        dev_cols, _ = _read(args.dev, "--dev", args, data_task)
        dev_slice = Slice.take(dev_cols, list(range(len(dev_cols.texts))), f"--dev {args.dev}")
    if args.max_dev_samples is not None and args.max_dev_samples < len(dev_slice):
        rows = stratified_subset(data_task.strata(dev_slice.labels), args.max_dev_samples, args.seed)
        dev_slice = Slice([dev_slice.texts[i] for i in rows], None if dev_slice.pairs is None else
                          [dev_slice.pairs[i] for i in rows], [dev_slice.labels[i] for i in rows],
                          f"{dev_slice.source}, {len(rows)} rows")

    if args.max_length is not None:  # typed: too long is an error; left out, it is chosen to fit
        _check_max_length(model_path, args.max_length)
    torch.manual_seed(args.seed)  # the exit heads' initialisation
    task_kwargs: dict = {"task": data_task.name, "exit_module": args.exit_module}
    if data_task.name == "regression":  # the heads learn the standardised score; the scale is the training rows'
        task_kwargs["target_mean"], task_kwargs["target_std"] = data_task.scale(train_slice.labels)
    if data_task.name == "multi-label" and args.label_separator is not None:
        task_kwargs["label_separator"] = args.label_separator
    token = data_task.name == "token-classification"
    if token and args.exit_module is not None:
        raise GeepError("--exit-module applies to sentence tasks; a token classifier decides from its tags' softmax")
    model = MultiExitClassifier.from_encoder(
        model_path, data_labels, num_layers=args.num_layers, head=args.head, pooling=args.pooling,
        exit_layers=exit_layers,
        objective=args.objective, recipe=recipe.name if recipe else None, max_length=args.max_length,
        text_column=args.tokens_column if token else args.text_column,
        text_pair_column=args.text_pair_column, label_column=args.tags_column if token else args.label_column,
        **task_kwargs,
    )
    names = model.label_names  # a fine-tuned model's own order
    task = model.task
    if token:  # sentences cut into windows of the model's max length; tags on each word's first subword
        train_slice, train_ids = _windows(model, train_slice)
        dev_slice, dev_ids = _windows(model, dev_slice)
    elif task.name == "classification":
        train_ids = encode_labels(train_slice.labels, names, source=train_slice.source)
        dev_ids = encode_labels(dev_slice.labels, names, source=dev_slice.source)
        if table_slice is not None:
            encode_labels(table_slice.labels, names, source=table_slice.source)
    else:  # targets: multi-hot label sets or scores (an unseen label at evaluation: a one-line error)
        train_ids = task.targets(train_slice.labels, train_slice.source)
        dev_ids = task.targets(dev_slice.labels, dev_slice.source)
        if table_slice is not None:
            task.targets(table_slice.labels, table_slice.source)
    train_data = EncodedData.from_texts(model, train_slice.texts, train_slice.pairs, train_ids)
    dev_data = EncodedData.from_texts(model, dev_slice.texts, dev_slice.pairs, dev_ids)
    if args.objective == "hashee":  # the hash is made before the first step, from the rows that take gradient steps
        from geep.modeling.token_hash import build_hash
        from geep.runtime.token_halting import check_halting

        model.set_token_hash(build_hash(args.hash or "frequency", train_data.encoded["input_ids"],
                                        model.backbone.config.vocab_size, model.num_layers,
                                        model.tokenizer.all_special_ids, buckets=args.hash_buckets, seed=args.seed))
        check_halting(model)  # a family whose layers cannot halt tokens: one line, before training
        logger.info("token hash: %s, %d buckets; tokens per layer in the training rows: %s", args.hash or "frequency",
                    model.token_hash.buckets, _hash_histogram(model, train_data.encoded["input_ids"]))
    plan = describe_plan(model, training_args)
    if all(stage["skipped"] for stage in plan):
        raise GeepError(f"nothing to train: every stage of {args.objective!r} is frozen or has 0 epochs")
    logger.info("data (%s): %d training rows (%s), %d dev rows (%s), %d exit-table rows (%s)", task.name,
                len(train_slice),
                train_slice.source, len(dev_slice), dev_slice.source, len(table_slice or []),
                table_slice.source if table_slice else "none")

    # ---- train
    result = train(model, train_data, dev_data, training_args)

    # ---- write the output directory
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    table_file = output / TABLE_DATA_NAME
    if table_slice is not None and len(table_slice):
        _write_jsonl(table_file, table_slice)
    elif table_file.exists():
        table_file.unlink()  # stale, from an overwritten run

    # ---- the exit table, from the rows that took no gradient step
    if table_slice is not None and len(table_slice):
        if args.build_threshold is None:  # chosen on dev, where fastbert stays within a point of full
            args.build_threshold = auto_build_threshold(model, dev_slice.texts, dev_slice.labels, dev_slice.pairs)
        table = build_table(model, table_slice.texts, table_slice.pairs, build_threshold=args.build_threshold,
                            ngram=args.ngram, min_count=args.min_count, smoothing=args.smoothing,
                            combine=args.combine, source=table_slice.source)
        logger.info("exit table: %d rows, exit histogram %s", len(table_slice), table.summary()["exit_histogram"])

    model.save_pretrained(output)
    sizes = {"train": len(train_slice), "dev": len(dev_slice), "table": len(table_slice or [])}
    summary = {
        "model": str(args.model), "model_path": str(model_path), "output": str(output),
        "train": train_slice.source, "dev": dev_slice.source,
        "table": table_slice.source if table_slice else None,
        "table_file": TABLE_DATA_NAME if table_slice is not None and len(table_slice) else None,
        "data_sizes": sizes, "label_names": names, "stages": plan,
        "task": {"name": task.name, "why": getattr(args, "task_reason", "--task"), "metric": task.primary,
                 **({"target_mean": task.target_mean, "target_std": task.target_std}
                    if task.name == "regression" else {})},
        "exit_module": args.exit_module,
        "token_hash": model.config.token_hash,
        "recipe": recipe.to_dict() if recipe else None,
        "resolved": {"pooling": model.config.pooling, "max_length": model.config.max_length,
                     "why": model.config.auto_settings},
        "train_seconds": round(result.train_seconds, 3), "train_cpu_seconds": round(result.train_cpu_seconds, 3),
        "device": result.device,
        "mixed_precision": result.mixed_precision, "dev_accuracy": result.dev_accuracy,
        "best_epochs": result.best_epochs, "history": result.to_dict()["history"],
        "args": {k: v for k, v in vars(args).items() if k not in ("func", "data_task", "task_reason")},
        "training_arguments": asdict(training_args),
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
    }
    (output / ARGS_NAME).write_text(json.dumps(summary, indent=2) + "\n")
    backbone = json.loads((output / "config.json").read_text())
    write_model_card(output, model.config, backbone, summary)

    print(f"saved to {output} ({sizes['train']} training rows, {sizes['dev']} dev rows, "
          f"{sizes['table']} exit-table rows; {result.train_seconds:.1f} s)")
    print(format_accuracy_table(result.dev_accuracy, metric=task.primary.replace("_", "-")))
    sys.stdout.flush()
    return 0


def _windows(model, rows: Slice) -> tuple[Slice, "torch.Tensor"]:
    """A token task's sentences as rows of at most the model's max length (``geep.data.token_data``) and their
    targets (R, M)."""
    data = TokenData([t.split(WORD_SEPARATOR) for t in rows.texts], rows.labels, rows.source)
    windows = make_windows(model.tokenizer, data, model.max_length)
    if len(windows) > len(data):
        logger.info("%s: sentences longer than %d tokens cut into windows: %d rows for %d sentences", rows.source,
                    model.max_length, len(windows), len(data))
    return (Slice(windows.texts, None, windows.position_tags, rows.source),
            model.task.targets(windows.position_tags, rows.source))


def _check_num_layers(model_path: Path, num_layers: int) -> None:
    """--num-layers in 1..L of the encoder, before anything is read or written."""
    from geep.modeling.families import family_for
    from geep.modeling.model import read_hf_config

    config = read_hf_config(model_path)
    depth = family_for(config).num_layers_of(config)
    if not 1 <= num_layers <= depth:
        raise GeepError(f"--num-layers must be in 1..{depth} (the encoder has {depth} layers), got {num_layers}")


def _depth(model_path: Path) -> int:
    """The encoder's number of layers, read from its config."""
    from geep.modeling.families import family_for
    from geep.modeling.model import read_hf_config

    config = read_hf_config(model_path)
    return family_for(config).num_layers_of(config)


def _hash_histogram(model, rows: list[list[int]]) -> dict[int, int]:
    """How many of the rows' tokens the model's token hash sends to each layer."""
    layers = model.token_hash.layers
    counts = torch.bincount(torch.tensor([int(layers[t]) for row in rows for t in row], dtype=torch.long),
                            minlength=model.num_layers + 1)
    return {k: int(counts[k]) for k in range(1, model.num_layers + 1)}


def _check_max_length(model_path: Path, max_length: int) -> None:
    from geep.modeling.model import read_hf_config

    limit = getattr(read_hf_config(model_path), "max_position_embeddings", None)
    if limit is not None and max_length > limit:
        raise GeepError(f"--max-length {max_length} is longer than the model's {limit} positions")


def _write_jsonl(path: Path, rows: Slice) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for i, text in enumerate(rows.texts):
            record = {"text": text}
            if rows.pairs is not None:
                record["text_pair"] = rows.pairs[i]
            record["label"] = rows.labels[i]
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
