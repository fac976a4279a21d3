"""`geep fit-means`: fit a trained classifier's class means on its training rows, for the ``class-means`` policy.

DIR is updated in place (no --output), as `geep build-table` does: ``class_means.safetensors`` is written, then
config.json (so a config never names means not yet written). Nothing is retrained.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from geep.errors import GeepError

logger = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "fit-means", help="fit a model's class means (the class-means policy)",
        description="Fit each exit's class means (the mean unit-length pooled representation of each class's "
                    "training rows) for the class-means policy. DIR is updated in place: its "
                    "class_means.safetensors and config.json are rewritten.")
    p.add_argument("--model", required=True, metavar="DIR", help="a geep classification model directory (updated "
                   "in place; it must be writable)")
    p.add_argument("--train", required=True, metavar="DATA", help="labelled training rows (a file, a saved "
                   "dataset directory or a packaged NAME[:split])")
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
    from geep.evaluation.fit_means import fit_class_means
    from geep.inference.spec import resolve_device
    from geep.modeling.model import MultiExitClassifier

    import torch

    if args.batch_size < 1:
        raise GeepError(f"--batch-size must be >= 1, got {args.batch_size}")
    directory = Path(args.model)
    model = MultiExitClassifier.from_pretrained(directory, device=resolve_device(args.device))
    if model.config.task != "classification":
        raise GeepError(f"class means need classes; {directory} is a {model.config.task} model")
    check_writable(directory, "--model")  # before any pass over the data
    text_column = args.text_column or model.config.text_column
    pair_column = checked_pair_column(args.text_pair_column, model.config, str(directory))
    label_column = args.label_column or model.config.label_column
    cols = get_columns(load_dataset_spec(args.train, args.encoding), text_column, pair_column, label_column,
                       source=args.train, require_labels=True)
    labels = torch.tensor(encode_labels(list(cols.labels), model.label_names, source=args.train), dtype=torch.long)
    encoded = model.tokenize(cols.texts, cols.text_pairs)
    means = fit_class_means(model, encoded, labels, batch_size=args.batch_size)
    model.set_class_means(means, rows=len(labels), source=args.train)
    means.save(directory / model.config.class_means["file"], model.label_names)
    model.save_config(directory)
    print(f"wrote {directory / model.config.class_means['file']}: class means of {len(labels)} rows from "
          f"{args.train} at exits {', '.join(map(str, model.exit_layers))}")
    return 0
