"""`geep calibrate`: choose each policy's knob on dev and store it as the model's default."""

from __future__ import annotations

import argparse
from pathlib import Path

from geep.cli.argtypes import check_grid_points, finite_float
from geep.errors import GeepError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from geep.evaluation.bounds import DEFAULT_CONFIDENCE

    p = subparsers.add_parser(
        "calibrate", help="choose each policy's default knob on dev",
        description="Score every knob of every policy on dev from one all-exits pass and store, per policy, the "
                    "knob that meets the target with stated confidence as the model's default (used by predict): "
                    "an upper bound on its accuracy drop against full, knobs tested from the slowest (fixed-"
                    "sequence testing). DIR is updated in place, by design (no --output): only its config.json is "
                    "rewritten, and not when a --target-speedup is unreachable.")
    p.add_argument("--model", required=True, metavar="DIR", help="a geep model directory (its config.json is "
                   "updated in place; it must be writable)")
    p.add_argument("--dev", required=True, metavar="DATA", help="labelled dev data (FILE or NAME[:split])")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--target-speedup", type=finite_float, metavar="X",
                        help="among knobs whose FLOPs speed-up vs full is at least X, the one with the smallest "
                        "upper bound on its accuracy drop (at --confidence over all of them)")
    target.add_argument("--max-accuracy-drop", type=finite_float, metavar="D",
                        help="the fastest knob whose drop against full is at most D points with --confidence, "
                        "bounded on dev; the drop is in the model's task's primary metric: accuracy (classification, "
                        "bounded), micro-F1 (multi-label) or Pearson (regression), both by the dev point estimate, "
                        "in points (x 100)")
    p.add_argument("--confidence", type=finite_float, default=DEFAULT_CONFIDENCE, metavar="C",
                   help="the confidence of the bound on each knob's accuracy drop, strictly between 0 and 1 "
                   f"(default {DEFAULT_CONFIDENCE:g}); stored with the knob and shown by `geep info`")
    p.add_argument("--policies", default=None,
                   help="comma-separated (default: every policy with a knob that applies to the model's task: for a "
                   "classifier fastbert,deebert,confidence,pabee,elbert,vote and, with a table, geep,geep-verify; lte "
                   "with an exit module)")
    p.add_argument("--grid-points", type=int, default=41, help="knobs per policy (integer knobs: all)")
    p.add_argument("--batch-size", type=int, default=32, help="the batch size whose FLOPs are counted")
    p.add_argument("--text-column", default=None)
    p.add_argument("--text-pair-column", default=None)
    p.add_argument("--label-column", default=None)
    p.add_argument("--encoding", default=None)
    p.add_argument("--device", choices=["cpu", "cuda"], default=None)
    p.add_argument("--precision", default="fp32", metavar="P",
                   help="calibrate the knobs used at this precision: fp32 (default), int8 (CPU), fp16 (CUDA), bf16; "
                   "the other precisions' knobs stay")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from geep.cli.columns import pair_column, refuse_token_data, token_rows
    from geep.cli.outputs import check_writable
    from geep.evaluation.bounds import check_confidence
    from geep.evaluation.calibrate import CALIBRATED_POLICIES, CASCADE_POLICIES, calibrate
    from geep.inference.spec import policy_for
    from geep.policies.base import knob_text
    from geep.modeling.cascade import Cascade
    from geep.data import ColumnData, get_columns, load_dataset_spec
    from geep.inference.spec import resolve_device
    from geep.modeling.cascade import load_model

    if args.target_speedup is not None and args.target_speedup <= 0:
        raise GeepError(f"--target-speedup must be positive, got {args.target_speedup}")
    if args.max_accuracy_drop is not None and not 0 <= args.max_accuracy_drop <= 100:
        raise GeepError(f"--max-accuracy-drop must be in [0, 100] points, got {args.max_accuracy_drop:g}")
    check_confidence(args.confidence)
    check_grid_points(args.grid_points)
    directory = Path(args.model)
    device = resolve_device(args.device)
    model = load_model(directory, device=device)
    check_writable(directory, "--model")  # before the dev pass, not after it
    policies = None
    if args.policies:
        policies = [p.strip() for p in args.policies.split(",") if p.strip()]
        allowed = CASCADE_POLICIES if isinstance(model, Cascade) else CALIBRATED_POLICIES
        for name in policies:
            policy_for(model, name)  # unknown -> error listing the known ones
            if name not in allowed:
                raise GeepError(f"{name} has no knob to calibrate; choose from: {', '.join(allowed)}")
            if policy_for(model, name).needs_table and model.exit_table is None:
                raise GeepError(f"{name} needs an exit table; build one with `geep build-table --model {directory}`")
    cfg = model.config
    ds = load_dataset_spec(args.dev, args.encoding)
    if cfg.task == "token-classification":  # sentences cut into windows; targets per position
        texts, labels = token_rows(model, ds, args.text_column or cfg.text_column,
                                   args.label_column or cfg.label_column, args.dev)
        cols = ColumnData(texts, None, labels, None)
    else:
        refuse_token_data(ds, args.text_column or cfg.text_column, args.dev, str(directory))
        cols = get_columns(ds, args.text_column or cfg.text_column,
                           pair_column(args.text_pair_column, cfg, str(directory)),
                           args.label_column or cfg.label_column, source=args.dev, require_labels=True)
    chosen = calibrate(model, cols.texts, cols.labels, cols.text_pairs, target_speedup=args.target_speedup,
                       max_accuracy_drop=args.max_accuracy_drop, policies=policies, batch_size=args.batch_size,
                       grid_points=args.grid_points, precision=args.precision, confidence=args.confidence)
    model.save_config(directory)
    metric = model.task.primary
    what = "accuracy" if metric == "accuracy" else metric.replace("_", "-")
    target = (f"FLOPs speed-up >= {args.target_speedup:g}x" if args.target_speedup is not None
              else f"{what} drop <= {args.max_accuracy_drop:g} points")
    bounded = metric == "accuracy"
    how_sure = f"at {100 * args.confidence:g}% confidence" if bounded else "by the dev point estimate (no bound)"
    print(f"calibrated {directory} on {args.dev} ({len(cols.texts)} rows) at {args.precision} for {target} "
          f"{how_sure}; stored as defaults:")
    column, unit = {"accuracy": ("dev acc", "%"), "pearson": ("dev r", " "), "micro_f1": ("dev µF1", " "),
              "entity_f1": ("dev eF1", " "), "token_accuracy": ("dev tacc", "%")}.get(
        metric, (f"dev {what}"[:8], " "))
    print(f"| {'policy':<12} | {'knob':>16} | {column:>7} | {'drop':>6} | {'bound':>6} | {'promised':>8} | "
          f"{'FLOPs x':>7} | {'mean layer':>10} |")
    print(f"|{'-' * 14}|{'-' * 18}|{'-' * 9}|{'-' * 8}|{'-' * 8}|{'-' * 10}|{'-' * 9}|{'-' * 12}|")
    for name, point in chosen.items():
        evidence = model.config.stored_evidence(args.precision, name) or {}
        print(f"| {name:<12} | {knob_text(policy_for(model, name, args.precision).knob_values(point.knob)):>16} | "
              f"{100 * point.score:>6.2f}{unit} | {evidence.get('drop', 0.0):>6.2f} | "
              f"{bound_text(point.drop_bound)} | {'yes' if point.promised else 'no':>8} | "
              f"{point.flops_speedup:>6.2f}x | {point.mean_exit_layer:>10.2f} |")
    if bounded:
        how = ("tested slowest knob first, so every knob that passed holds at once"
               if args.max_accuracy_drop is not None
               else "Bonferroni over the knobs that reach the speed-up, so it holds for the one chosen")
        print(f"drop: full's dev accuracy minus the knob's, in points; bound: its upper bound at "
              f"{100 * args.confidence:g}% confidence ({how})")
    else:
        print(f"drop: full's dev {what} minus the knob's, in points (x 100); no bound: {what} is not a mean of right "
              "rows")
    errors = getattr(model.config, "calibration_error", {}).get(args.precision)
    if errors:
        temperatures = model.config.temperatures[args.precision]
        print("exit temperatures (fitted on dev first; confidence reads softmax(z / T)), ECE before -> after: "
              + "; ".join(f"{k}: T={t:.3f}, {100 * b:.2f}% -> {100 * a:.2f}%" for k, t, b, a in
                          zip(model.exit_layers, temperatures, errors["before"], errors["after"])))
    default = model.config.stored_policy(args.precision)
    if args.max_accuracy_drop is not None and default == "full":
        how = "no policy's knob was promised on these rows"
    elif args.max_accuracy_drop is not None:
        how = "the fastest whose knob was promised"
    else:
        how = "the smallest bound on its drop among those that reach the speed-up"
    print(f"default policy at {args.precision}: {default} ({how}; predict and serve run it when no policy is named)")
    return 0


def bound_text(bound: float | None) -> str:
    """A knob's stored bound for the calibrate table, six wide: '-' when it was chosen without one."""
    return f"{'-':>6}" if bound is None else f"{bound:>6.2f}"
