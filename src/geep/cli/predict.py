"""`geep predict`: label every row of a file (or a packaged set) with a saved model under an exit policy.

One output row per input row, in input order: ``id`` (when the input has the id column), then the model's task's
fields and ``exit_layer`` (1..L): a classifier writes ``prediction`` (the label name), ``probability`` (its
probability) and ``probabilities`` (every class's); a multi-label model ``prediction`` (the list of labels in the set)
and ``probabilities`` (every label's sigmoid); a regression model ``prediction`` (the score). In ``.jsonl`` output
``probabilities`` is an object {label: probability}; in ``.csv`` output a list or object is that same value as a JSON
string in one column, so both formats have the same fields.

Everything the user can get wrong (output path, data, columns, policy, threshold, device) is checked before the
model runs. The output is written to a temporary file beside it and renamed at the end: an interrupted run
leaves no partial file and an existing output untouched.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
from pathlib import Path
from typing import Any

from geep.cli.argtypes import set_threads
from geep.cli.predict_ray import add_ray_arguments, run_ray
from geep.errors import GeepError

logger = logging.getLogger(__name__)

OUTPUT_FORMATS = (".jsonl", ".csv")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from geep.policies import POLICIES

    p = subparsers.add_parser(
        "predict", help="label a file with a saved model",
        description="Label every row of DATA with a saved geep model under an exit policy.",
    )
    p.add_argument("--model", required=True, metavar="DIR", help="a directory written by `geep train`")
    p.add_argument("--input", required=True, metavar="DATA", help="FILE (.csv .tsv .json .jsonl .parquet, a "
                   "saved datasets dir) or a packaged NAME[:split]")
    p.add_argument("--output", required=True, metavar="FILE", help="where to write: .jsonl or .csv (with --ray: a "
                   "directory)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    p.add_argument("--text-column", default=None, help="default: the model's (from training)")
    p.add_argument("--text-pair-column", default=None, help="default: the model's (from training)")
    p.add_argument("--id-column", default=None,
                   help="column copied to the output's `id` (default: `id`, when the input has one)")
    p.add_argument("--label-column", default=None,
                   help="true labels, read only by the oracle policy (default: the model's)")
    p.add_argument("--policy", default="full", metavar="P",
                   help=f"exit policy: {', '.join(POLICIES)} (default: full)")
    p.add_argument("--threshold", default=None, metavar="KNOB", type=_number,
                   help="the policy's knob (default: the model's calibrated one, else the policy's own): "
                   "fastbert in [0, 1] (0: never exit early, 1: all at the first exit); deebert in [0, ln C] "
                   "(0: never, ln C: first); confidence in [0, 1] (1: never, 0: first); pabee an integer in "
                   "[0, |E|-1] (|E|-1: never, 0: first); geep and geep-verify: tau in [0, 1], the quantile "
                   "of each row's predicted exit distribution (1: never, 0: first); lte (a learned exit's "
                   "certainty) in [0, 1] (1: never, 0: first); elbert as fastbert; vote in [0, 1] (the leading "
                   "class's share of every exit's vote; 1: never, 0: first); margin (multi-label) in [0, 0.5] (0.5: "
                   "never, 0: first); full and oracle take none")
    p.add_argument("--continue-threshold", default=None, metavar="T", type=_number,
                   help="geep-verify only: the fastbert threshold t in [0, 1] rows continue under after their "
                   "predicted layer (default: the model's calibrated one, else the exit table's build threshold S)")
    p.add_argument("--cascade-threshold", default=None, metavar="T[,T..]", type=_numbers,
                   help="a cascade only: one threshold in [0, 1] per member boundary: a row leaves at a member's "
                   "last exit when its calibrated max probability is at least this (1: always go on to the next "
                   "member; default: the calibrated ones, else 0.9); with full members --threshold is the same "
                   "for a cascade of two")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default=None, metavar="cpu|cuda", help="default: where the model loads (cpu)")
    p.add_argument("--precision", default="fp32", metavar="P",
                   help="fp32 (default), int8 (CPU), fp16 (CUDA) or bf16; the knob defaults to the one calibrated "
                   "at that precision (`geep calibrate --precision`)")
    p.add_argument("--encoding", default=None, help="encoding of CSV/TSV/JSON input (default UTF-8)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_ray_arguments(p)
    p.set_defaults(func=run)


def _numbers(text: str) -> list[float]:
    return [_number(part) for part in text.split(",")]


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def check_output(path: str, *, overwrite: bool = False, inputs: tuple = (), models: tuple = ()) -> Path:
    """The output path, checked (geep.cli.outputs): a .jsonl or .csv file in an existing writable directory, not
    an existing file without ``overwrite``, neither an input nor inside a model directory."""
    from geep.cli.outputs import check_output_file

    return check_output_file(path, overwrite=overwrite, suffixes=OUTPUT_FORMATS, inputs=inputs, models=models)


def run(args: argparse.Namespace) -> int:
    if args.ray:
        return run_ray(args)
    set_threads(args.threads)
    from geep.cli.columns import pair_column
    from geep.data import get_columns, is_token_data, load_dataset_spec
    from geep.inference.inputs import GivenKnob
    from geep.inference.predictor import Predictor
    from geep.modeling.cascade import load_model

    output = check_output(args.output, overwrite=args.overwrite, inputs=(args.input,), models=(args.model,))
    if args.batch_size < 1:
        raise GeepError(f"--batch-size must be at least 1, got {args.batch_size}")
    model = load_model(args.model)
    # The run, resolved once: policy, knob, precision, device and batch size (geep.inference.spec).
    predictor = Predictor(model, args.policy, GivenKnob(args.threshold, args.continue_threshold,
                                                        args.cascade_threshold),
                          batch_size=args.batch_size, device=args.device, precision=args.precision)
    policy = predictor.policy
    config = model.config
    ds = load_dataset_spec(args.input, encoding=args.encoding)
    id_column = args.id_column
    if id_column is None and "id" in ds.column_names:
        id_column = "id"
    if config.task == "token-classification":
        return _run_tokens(args, predictor, model, ds, output, id_column)
    text_column = args.text_column or config.text_column
    if text_column not in ds.column_names and is_token_data(ds, "tokens", "tags"):
        raise GeepError(f"{args.input} holds token-classification data (words and tags), but {args.model} is a "
                        f"{config.task} model of texts")
    label_column = (args.label_column or config.label_column) if policy.needs_labels else None
    data = get_columns(ds, args.text_column or config.text_column,
                       pair_column(args.text_pair_column, config, args.model), label_column, source=args.input,
                       require_labels=policy.needs_labels, id_column=id_column)
    labels = None
    if policy.needs_labels:
        labels = target_labels(model, data.labels, args.input)
    out = predictor(data.texts, data.text_pairs, labels=labels, show_progress=not args.no_progress)
    write_predictions(output, out, model.task, data.ids)
    logger.info("wrote %d predictions to %s", len(out), output)
    return 0


def _run_tokens(args: argparse.Namespace, predictor: Any, model: Any, ds: Any, output: Path,
                id_column: str | None) -> int:
    """`geep predict` of a token classifier: one row per sentence, its ``tokens``, each word's ``tags`` and
    ``exit_layers``, its ``entities`` (spans decoded from the tags) and ``exit_layer`` (its deepest window's)."""
    from geep.data import get_token_columns, make_windows
    from geep.inference.rows import sentence_answers

    config = model.config
    tokens_column = args.text_column or config.text_column
    if tokens_column not in ds.column_names and "text" in ds.column_names:
        raise GeepError(f"{args.input} holds sentence data (a 'text' column), but {args.model} is a token "
                        "classifier: it reads a column of words (--text-column)")
    tags_column = (args.label_column or config.label_column) if predictor.policy.needs_labels else None
    data = get_token_columns(ds, tokens_column, tags_column, source=args.input,
                             require_tags=predictor.policy.needs_labels)
    ids = list(ds.data.column(id_column).to_pylist()) if id_column is not None else None
    windows = make_windows(model.tokenizer, data, model.max_length)
    labels = None if windows.position_tags is None else model.task.targets(windows.position_tags, args.input)
    out = predictor(windows.texts, labels=labels, show_progress=not args.no_progress)
    rows = sentence_answers(model.task, windows, data.sentences, out.label_ids, out.exit_layer)
    from geep.io import atomic_path

    with atomic_path(output) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
        fields = (["id"] if ids is not None else []) + ["tokens", "tags", "entities", "exit_layers", "exit_layer"]
        writer = None if output.suffix.lower() == ".jsonl" else csv.DictWriter(f, fieldnames=fields)
        if writer is not None:
            writer.writeheader()
        for i, row in enumerate(rows):
            row = ({} if ids is None else {"id": ids[i]}) | row
            if writer is None:
                f.write(jsonl_line(row))
            else:
                writer.writerow({k: json.dumps(v, ensure_ascii=False) if isinstance(v, (list, dict)) else v
                                 for k, v in row.items()})
    logger.info("wrote %d sentences (%d rows) to %s", len(rows), len(windows), output)
    return 0


def jsonl_line(row: dict[str, Any]) -> str:
    """One row as a JSON line (ids of any type are written as their string when JSON has no form for them)."""
    return json.dumps(row, ensure_ascii=False, default=str) + "\n"


def target_labels(model: Any, labels: list, source: str) -> Any:
    """The true labels of a data column as the model's task's targets (an unseen label: a one-line error)."""
    from geep.data import encode_labels

    if model.config.task == "classification":
        return encode_labels(labels, model.config.label_names, source=source)
    task = model.task
    return task.targets(task.read_labels(labels, source), source)


def write_predictions(path: Path, out: Any, task: Any, ids: list | None) -> None:
    """Writes the rows atomically: to a temporary file beside ``path``, renamed onto it at the end. ``task``: the
    model's (``geep.tasks``), whose fields each row has; in CSV a field holding a list or an object (a label set,
    ``probabilities``) is that value as a JSON string."""
    from geep.inference.outputs import prediction_fields
    from geep.io import atomic_path

    rows = out.rows(task, ids)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
        if path.suffix.lower() == ".jsonl":
            for row in rows:
                f.write(jsonl_line(row))
        else:
            fields = (["id"] if ids is not None else []) + list(prediction_fields(task))
            if getattr(out, "exit_member", None) is not None:
                fields.append("exit_member")
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            for row in rows:
                writer.writerow({k: json.dumps(v, ensure_ascii=False) if isinstance(v, (list, dict)) else v
                                 for k, v in row.items()})

