"""`geep build-table`: build (or rebuild) a model's token exit table from rows that took no gradient step."""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path

from geep.errors import GeepError

logger = logging.getLogger(__name__)

TABLE_DATA_NAME = "table_data.jsonl"  # the held-out slice `geep train` saves beside the model (see cli/train.py)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "build-table", help="build a model's token exit table",
        description="Build the token exit table GEEP predicts exit layers from. Each row's exit layer is the "
                    "one the fastbert rule at --build-threshold gives it. DIR is updated in place, by design (no "
                    "--output): its exit_table.safetensors and config.json are rewritten.")
    p.add_argument("--model", required=True, metavar="DIR", help="a geep model directory (updated in place; it "
                   "must be writable)")
    p.add_argument("--data", metavar="DATA", default=None,
                   help=f"held-out rows (default: the model's own {TABLE_DATA_NAME}, saved by `geep train`)")
    add_table_options(p)
    p.add_argument("--dev", metavar="DATA", default=None,
                   help="labelled dev data to choose --build-threshold on (when it is not given)")
    p.add_argument("--label-column", default=None, help="of --dev (default: the model's)")
    p.add_argument("--text-column", default=None, help="default: the model's (text for the default data)")
    p.add_argument("--text-pair-column", default=None)
    p.add_argument("--encoding", default=None)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", choices=["cpu", "cuda"], default=None)
    p.set_defaults(func=run)


def add_table_options(p: argparse.ArgumentParser) -> None:
    """The table's own options, shared with `geep train`."""
    from geep.evaluation.build_table import AUTO_MAX_ACCURACY_DROP, DEFAULT_BUILD_THRESHOLD

    p.add_argument("--build-threshold", type=float, default=None, metavar="S",
                   help="normalised-entropy threshold of the fastbert rule that measures each row's exit (also "
                        "geep-verify's). Default: chosen on dev data, the fastest fastbert knob within "
                        f"{AUTO_MAX_ACCURACY_DROP:g} points of the full model ({DEFAULT_BUILD_THRESHOLD} without dev data)")
    p.add_argument("--ngram", type=int, choices=[1, 2], default=1, help="1: token keys; 2: also token bigrams")
    p.add_argument("--min-count", type=int, default=2, help="rows a bigram needs to be used (else back-off)")
    p.add_argument("--smoothing", type=float, default=1.0, help="a in (n_kl + a pi_l) / (N_k + a)")
    p.add_argument("--combine", choices=["mean", "geometric", "vote"], default="mean",
                   help="how a row's keys combine: IDF-weighted mean (the paper's), geometric mean "
                        "(length-normalised log-odds) or a vote of per-key median layers")


def check_table_options(args: argparse.Namespace) -> None:
    if args.build_threshold is not None and not 0.0 <= args.build_threshold <= 1.0:
        raise GeepError(f"--build-threshold must lie in [0, 1], got {args.build_threshold}")
    if not (math.isfinite(args.smoothing) and args.smoothing >= 0):
        raise GeepError(f"--smoothing must be a finite number >= 0, got {args.smoothing}")
    if args.min_count < 1:
        raise GeepError(f"--min-count must be >= 1, got {args.min_count}")


def build_from_spec(model, spec: str, args: argparse.Namespace, text_column: str, text_pair_column: str | None,
                    source: str):
    """Reads DATA and builds the model's table with the options in ``args``."""
    from geep.data import get_columns, load_dataset_spec
    from geep.evaluation.build_table import build_table

    cols = get_columns(load_dataset_spec(spec, args.encoding), text_column, text_pair_column, None,
                       source=spec, require_labels=False)
    return build_table(model, cols.texts, cols.text_pairs, build_threshold=args.build_threshold, ngram=args.ngram,
                       min_count=args.min_count, smoothing=args.smoothing, combine=args.combine,
                       batch_size=getattr(args, "batch_size", 32), source=source)


def threshold_from_dev(model, args: argparse.Namespace) -> float:
    """S chosen on --dev, or the fixed default (logged) without dev data."""
    from geep.cli.columns import pair_column
    from geep.data import get_columns, load_dataset_spec
    from geep.evaluation.build_table import auto_build_threshold, default_build_threshold

    if args.dev is None:
        threshold = default_build_threshold(model)
        logger.info("no --dev: build threshold S = %g (pass --dev to choose it on data)", threshold)
        return threshold
    cfg = model.config
    cols = get_columns(load_dataset_spec(args.dev, args.encoding), args.text_column or cfg.text_column,
                       pair_column(args.text_pair_column, cfg, args.model), args.label_column or cfg.label_column,
                       source=args.dev, require_labels=True)
    return auto_build_threshold(model, cols.texts, cols.labels, cols.text_pairs)


def run(args: argparse.Namespace) -> int:
    from geep.cli.columns import pair_column as checked_pair_column
    from geep.cli.outputs import check_writable
    from geep.inference.spec import resolve_device
    from geep.modeling.model import MultiExitClassifier

    check_table_options(args)
    directory = Path(args.model)
    model = MultiExitClassifier.from_pretrained(directory, device=resolve_device(args.device))
    check_writable(directory, "--model")  # before any pass over the data
    if args.data is None:
        spec = directory / TABLE_DATA_NAME
        if not spec.is_file():
            raise GeepError(f"{directory} has no {TABLE_DATA_NAME} (trained with --table-fraction 0?); "
                            "pass held-out rows with --data")
        text_column, pair_column = "text", ("text_pair" if model.config.text_pair_column else None)
        spec, source = str(spec), f"{TABLE_DATA_NAME} (held out of training)"
    else:
        spec, source = args.data, args.data
        text_column = args.text_column or model.config.text_column
        pair_column = checked_pair_column(args.text_pair_column, model.config, str(directory))
    if args.build_threshold is None:
        args.build_threshold = threshold_from_dev(model, args)
    table = build_from_spec(model, spec, args, text_column, pair_column, source)
    model.save_exit_table(directory)  # the table first: a config never names a table not yet written
    model.save_config(directory)
    summary = table.summary()
    print(f"wrote {directory / model.config.exit_table['file']}: {summary['num_rows']} rows from {source}, build threshold "
          f"{args.build_threshold}, {summary['unigram_keys']} token keys"
          + (f", {summary['bigram_keys']} bigram keys" if args.ngram == 2 else ""))
    print("exit histogram: " + ", ".join(f"layer {k}: {v}" for k, v in summary["exit_histogram"].items()))
    return 0
