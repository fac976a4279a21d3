"""`geep bench`: accuracy against FLOPs and wall-clock speed-up, every exit policy side by side (see geep.bench).

Everything the user can get wrong (settings, policies, device, output, models, data, columns, labels) is checked
before the first timed run. Writes ``bench.json``, ``report.md`` and ``curves.png`` into ``--output``, then
prints a short summary: per model and batch size, each policy's fastest point on its FLOPs frontier within the
accuracy budget (1 point of ``full`` by default), its wall-clock speed-up and the runs' spread.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from geep.cli.argtypes import set_threads
from geep.errors import GeepError

logger = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from geep.bench import DEFAULT_POLICIES

    p = subparsers.add_parser(
        "bench", help="accuracy vs FLOPs and wall-clock speed-up for every exit policy",
        description="Bench every exit policy of one or more saved models on labelled data: accuracy, macro-F1 and "
                    "FLOPs speed-up over each policy's whole knob range, wall-clock speed-up on a few knobs.",
    )
    p.add_argument("--model", required=True, action="append", metavar="DIR",
                   help="a directory written by `geep train`; repeat to bench several models together")
    p.add_argument("--reference", default=None, metavar="DIR",
                   help="the --model every other is also measured against, on the same axes (default: the first "
                   "--model): static baselines (geep train --num-layers) and cascades beside its frontier")
    p.add_argument("--data", required=True, metavar="DATA", help="labelled FILE (.csv .tsv .json .jsonl .parquet, "
                   "a saved datasets dir) or a packaged NAME[:split], e.g. bbc:test")
    p.add_argument("--output", required=True, metavar="DIR", help="where bench.json, report.md, curves.png go")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty --output")
    p.add_argument("--batch-sizes", default="1,32", metavar="B,B,..", help="default: 1,32")
    p.add_argument("--policies", default=",".join(DEFAULT_POLICIES), metavar="P,P,..",
                   help="default: all (geep and geep-verify are skipped on a model without an exit table; full is "
                   "always benched: it is the reference)")
    p.add_argument("--grid-points", type=int, default=21, metavar="N",
                   help="knobs per policy for accuracy and FLOPs (pabee: every integer patience) (default: 21)")
    p.add_argument("--timed-points", type=int, default=5, metavar="N",
                   help="knobs per policy timed, along its FLOPs frontier: the fastest within --accuracy-budget, "
                   "its neighbours on both sides, the rest spread over the frontier; never a knob at which no row "
                   "exits early (full's work; full is timed beside it) (default: 5)")
    p.add_argument("--accuracy-budget", type=float, default=1.0, metavar="D",
                   help="points below full (at fp32) that the timed knobs and the summary centre on (default: 1)")
    p.add_argument("--repeats", type=int, default=5, metavar="R",
                   help="timed runs per point, interleaved, >= 5; each point keeps the median (default: 5)")
    p.add_argument("--warmup", type=int, default=1, metavar="W", help="untimed runs per point first (default: 1)")
    p.add_argument("--max-samples", type=int, default=None, metavar="N",
                   help="bench a seeded stratified subset of N rows")
    p.add_argument("--seed", type=int, default=0, help="seed of the --max-samples subset (default: 0)")
    p.add_argument("--device", default=None, metavar="cpu|cuda", help="default: where the model loads (cpu)")
    p.add_argument("--precision", default="fp32", metavar="P,P,..",
                   help="precisions benched side by side, timed in the same rounds: fp32, int8 (CPU), fp16 (CUDA), "
                   "bf16 (default: fp32); e.g. fp32,int8 compares early exit at int8 with full at fp32 and int8")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch CPU threads (default: torch's own); fewer than the cores where others share them")
    p.add_argument("--text-column", default=None, help="default: the model's (from training)")
    p.add_argument("--text-pair-column", default=None, help="default: the model's (from training)")
    p.add_argument("--label-column", default=None, help="default: the model's (from training)")
    p.add_argument("--encoding", default=None, help="encoding of CSV/TSV/JSON input (default UTF-8)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def model_names(dirs: list[str]) -> list[str]:
    """Each model's name: its directory's name, or the path as given where two names would clash."""
    names = [Path(d).name or str(d) for d in dirs]
    return [d if names.count(n) > 1 else n for d, n in zip(dirs, names)]


def run(args: argparse.Namespace) -> int:
    from geep.bench import bench, check_policies, check_settings, format_summary, parse_batch_sizes, \
        write_outputs
    from geep.cli.argtypes import check_grid_points
    from geep.cli.columns import pair_column, refuse_token_data
    from geep.cli.outputs import check_output_dir
    from geep.data import encode_labels, get_columns, load_dataset_spec, stratified_subset
    from geep.inference.spec import resolve_device
    from geep.modeling.cascade import load_model
    from geep.runtime import parse_precisions

    batch_sizes = parse_batch_sizes(args.batch_sizes)
    precisions = parse_precisions(args.precision)
    check_grid_points(args.grid_points)
    check_settings(batch_sizes=batch_sizes, grid_points=args.grid_points, timed_points=args.timed_points,
                   repeats=args.repeats, warmup=args.warmup, accuracy_budget=args.accuracy_budget)
    policies = check_policies([p.strip() for p in args.policies.split(",") if p.strip()])
    if args.max_samples is not None and args.max_samples < 1:
        raise GeepError(f"--max-samples must be at least 1, got {args.max_samples}")
    device = resolve_device(args.device)  # the precisions are checked on it by the bench, before anything runs
    set_threads(args.threads)
    output = check_output_dir(args.output, overwrite=args.overwrite, inputs=(args.data,), models=args.model)
    if len(set(args.model)) != len(args.model):
        raise GeepError("the same --model is given twice")

    names = model_names(args.model)
    reference = None
    if args.reference is not None:
        matches = [n for n, d in zip(names, args.model) if Path(d).resolve() == Path(args.reference).resolve()]
        if not matches:
            raise GeepError(f"--reference {args.reference} is not one of the --model directories")
        reference = matches[0]
    models = {name: load_model(d) for name, d in zip(names, args.model)}
    configs = [m.config for m in models.values()]
    for name, config in zip(models, configs):
        pair_column(args.text_pair_column, config, name)
    columns = []
    for flag, attr in (("text_column", "text_column"), ("text_pair_column", "text_pair_column"),
                       ("label_column", "label_column")):
        given = getattr(args, flag)
        resolved = {given or getattr(c, attr) for c in configs}
        if len(resolved) > 1:
            raise GeepError(f"the models were trained on different {attr.replace('_', ' ')}s "
                            f"({', '.join(sorted(map(str, resolved)))}); pass --{flag.replace('_', '-')}")
        columns.append(resolved.pop())
    text_column, pair_column, label_column = columns
    ds = load_dataset_spec(args.data, encoding=args.encoding)
    tasks = {m.config.task for m in models.values()}
    if len(tasks) > 1:
        raise GeepError(f"the models are of different tasks ({', '.join(sorted(tasks))}); bench them apart")
    task = next(iter(models.values())).task
    if task.name == "token-classification":  # sentences cut into windows; every model's own max length
        return _bench_tokens(args, models, ds, text_column, label_column, batch_sizes, policies, precisions,
                             reference, device, output)
    refuse_token_data(ds, text_column, args.data, "each --model")
    data = get_columns(ds, text_column, pair_column, label_column, source=args.data, require_labels=True)
    texts, pairs, labels = data.texts, data.text_pairs, data.labels
    if task.name != "classification":
        labels = task.read_labels(labels, args.data)
    if args.max_samples is not None and args.max_samples < len(texts):
        keep = stratified_subset(task.strata(labels), args.max_samples, args.seed)
        texts = [texts[i] for i in keep]
        labels = [labels[i] for i in keep]
        pairs = None if pairs is None else [pairs[i] for i in keep]
        logger.info("benching a stratified subset of %d of %d rows (seed %d)", len(texts), len(data.texts),
                    args.seed)
    for model in models.values():  # unseen labels fail here, before anything runs
        if task.name == "classification":
            encode_labels(labels, model.config.label_names, source=args.data)
        else:
            model.task.targets(labels, args.data)

    result = bench(models, texts, labels, pairs, batch_sizes=batch_sizes, policies=policies,
                   grid_points=args.grid_points, timed_points=args.timed_points, repeats=args.repeats,
                   warmup=args.warmup, device=device, data_spec=args.data, show_progress=not args.no_progress,
                   precisions=precisions, accuracy_budget=args.accuracy_budget, reference=reference,
                   extra_header={"max_samples": args.max_samples, "seed": args.seed,
                                 "model_dirs": {n: str(d) for n, d in zip(models, args.model)}})
    paths = write_outputs(result, output)
    print(format_summary(result, args.accuracy_budget))
    print(f"wrote {paths['json']}, {paths['report']} and {paths['curves']}")
    return 0


def _bench_tokens(args: argparse.Namespace, models: dict, ds, tokens_column: str, tags_column: str, batch_sizes,
                  policies, precisions, reference, device, output) -> int:
    """`geep bench` of token classifiers: one model's windows (its max length) and per-position targets; each knob
    reports entity F1 (seqeval's) and token accuracy beside FLOPs and wall time."""
    from geep.bench import bench, format_summary, write_outputs
    from geep.cli.columns import token_rows

    if len(models) > 1:
        raise GeepError("bench token classifiers one --model at a time (their windows follow each model's max "
                        "length)")
    (model,) = models.values()
    texts, targets = token_rows(model, ds, tokens_column, tags_column, args.data, max_samples=args.max_samples,
                                seed=args.seed)
    result = bench(models, texts, targets.tolist(), None, batch_sizes=batch_sizes, policies=policies,
                   grid_points=args.grid_points, timed_points=args.timed_points, repeats=args.repeats,
                   warmup=args.warmup, device=device, data_spec=args.data, show_progress=not args.no_progress,
                   precisions=precisions, accuracy_budget=args.accuracy_budget, reference=reference,
                   extra_header={"max_samples": args.max_samples, "seed": args.seed, "rows": len(texts),
                                 "model_dirs": {n: str(d) for n, d in zip(models, args.model)}})
    paths = write_outputs(result, output)
    print(format_summary(result, args.accuracy_budget))
    print(f"wrote {paths['json']}, {paths['report']} and {paths['curves']}")
    return 0
