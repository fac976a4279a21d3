"""`geep fit-means`: fit a trained classifier's representation statistics on its training rows, for the
``class-means`` policy (each exit's class means) and the ``trust-score`` policy (each exit's bounded, alpha-filtered
per-class sets of training representations).

DIR is updated in place (no --output), as `geep build-table` does: each fitted file (``class_means.safetensors``,
``trust_score.safetensors``) is written, then config.json (so a config never names a file not yet written). What is
not asked for (``--statistics``) stays as it was. Nothing is retrained.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from geep.errors import GeepError

logger = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from geep.modeling.trust_score import DEFAULT_ALPHA, DEFAULT_PER_CLASS

    p = subparsers.add_parser(
        "fit-means", help="fit a model's class means or trust-score sets (the class-means and trust-score policies)",
        description="Fit each exit's class means (the mean unit-length pooled representation of each class's "
                    "training rows) for the class-means policy, and/or each exit's trust-score sets (at most "
                    "--trust-per-class training representations per class, alpha-filtered) for the trust-score "
                    "policy. DIR is updated in place: the fitted files and config.json are rewritten.")
    p.add_argument("--model", required=True, metavar="DIR", help="a geep classification model directory (updated "
                   "in place; it must be writable)")
    p.add_argument("--train", required=True, metavar="DATA", help="labelled training rows (a file, a saved "
                   "dataset directory or a packaged NAME[:split])")
    p.add_argument("--statistics", default="class-means", metavar="S,S",
                   help="what to fit, comma-separated: class-means (default), trust-score, or both")
    p.add_argument("--trust-per-class", type=int, default=DEFAULT_PER_CLASS, metavar="M",
                   help=f"trust-score: the most training rows of one class a set keeps, drawn uniformly (seeded; "
                   f"default {DEFAULT_PER_CLASS})")
    p.add_argument("--trust-alpha", type=float, default=DEFAULT_ALPHA, metavar="A",
                   help="trust-score: the share of each set dropped by the paper's filter (the points with the "
                   f"largest 10-NN radius), in [0, 1) (default {DEFAULT_ALPHA:g}: none)")
    p.add_argument("--seed", type=int, default=0, help="trust-score: the seed of each class's draw")
    p.add_argument("--text-column", default=None, help="default: the model's (from training)")
    p.add_argument("--text-pair-column", default=None, help="default: the model's (from training)")
    p.add_argument("--label-column", default=None, help="default: the model's (from training)")
    p.add_argument("--encoding", default=None, help="encoding of CSV/TSV/JSON input (default UTF-8)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", choices=["cpu", "cuda"], default=None)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from geep.cli.columns import pair_column as checked_pair_column
    from geep.cli.outputs import check_writable
    from geep.data import encode_labels, get_columns, load_dataset_spec
    from geep.evaluation.fit_means import STATISTICS, fit_class_means, fit_trust_sets
    from geep.inference.spec import resolve_device
    from geep.modeling.model import MultiExitClassifier

    import torch

    if args.batch_size < 1:
        raise GeepError(f"--batch-size must be >= 1, got {args.batch_size}")
    statistics = [s.strip() for s in args.statistics.split(",") if s.strip()]
    unknown = [s for s in statistics if s not in STATISTICS]
    if unknown or not statistics:
        what = f"unknown {unknown[0]!r}" if unknown else "names nothing"
        raise GeepError(f"--statistics {what}; choose from: {', '.join(STATISTICS)}")
    if "trust-score" in statistics:
        if args.trust_per_class < 1:
            raise GeepError(f"--trust-per-class must be a positive integer, got {args.trust_per_class}")
        if not 0.0 <= args.trust_alpha < 1.0:
            raise GeepError(f"--trust-alpha must be in [0, 1), got {args.trust_alpha:g}")
    directory = Path(args.model)
    model = MultiExitClassifier.from_pretrained(directory, device=resolve_device(args.device))
    if model.config.task != "classification":
        raise GeepError(f"class means need classes, as trust scores do; {directory} is a {model.config.task} model")
    check_writable(directory, "--model")  # before any pass over the data
    text_column = args.text_column or model.config.text_column
    pair_column = checked_pair_column(args.text_pair_column, model.config, str(directory))
    label_column = args.label_column or model.config.label_column
    cols = get_columns(load_dataset_spec(args.train, args.encoding), text_column, pair_column, label_column,
                       source=args.train, require_labels=True)
    labels = torch.tensor(encode_labels(list(cols.labels), model.label_names, source=args.train), dtype=torch.long)
    encoded = model.tokenize(cols.texts, cols.text_pairs)
    fitted = []
    if "class-means" in statistics:
        means = fit_class_means(model, encoded, labels, batch_size=args.batch_size)
        model.set_class_means(means, rows=len(labels), source=args.train)
        fitted.append((model.config.class_means["file"], means.save, (model.label_names,),
                       f"class means of {len(labels)} rows"))
    if "trust-score" in statistics:
        sets, settings = fit_trust_sets(model, encoded, labels, per_class=args.trust_per_class,
                                        alpha=args.trust_alpha, seed=args.seed, batch_size=args.batch_size)
        model.set_trust_sets(sets, {**settings, "source": args.train})
        fitted.append((model.config.trust_score["file"], sets.save, (model.label_names, model.config.trust_score),
                       f"trust-score sets of {settings['rows']} rows (at most {args.trust_per_class} per class, "
                       f"alpha {args.trust_alpha:g})"))
    for name, save, extra, _ in fitted:
        save(directory / name, *extra)
    model.save_config(directory)
    for name, _, _, what in fitted:
        print(f"wrote {directory / name}: {what} from {args.train} at exits {', '.join(map(str, model.exit_layers))}")
    return 0
