"""`geep info DIR`: what a trained model directory holds, read from its config.json (no weights loaded)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from geep.training.card import describe_task, format_accuracy_table
from geep.modeling.config import GeepConfig
from geep.errors import GeepError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("info", help="show a trained model's configuration and per-exit dev accuracy",
                              description="Show a trained geep model's configuration and per-exit dev accuracy.")
    p.add_argument("model", metavar="DIR", help="a directory written by `geep train`")
    p.set_defaults(func=run)


def read_model_info(directory: str | Path) -> tuple[GeepConfig, dict, dict | None]:
    """(geep config, backbone config dict, training_args.json or None) of a model directory."""
    directory = Path(directory)
    if not directory.is_dir():
        raise GeepError(f"no model directory at {directory}")
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise GeepError(f"no geep model at {directory} (no config.json)")
    try:
        raw = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GeepError(f"{config_path} is not valid JSON: {e}") from None
    if not isinstance(raw, dict) or "geep" not in raw:
        raise GeepError(f"{directory} is not a geep model (its config.json has no `geep` section)")
    config = GeepConfig.from_dict(raw.pop("geep"))
    training = None
    args_path = directory / "training_args.json"
    if args_path.is_file():
        try:
            training = json.loads(args_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            training = None
        if not isinstance(training, dict):  # damaged: info still shows the config
            training = None
    return config, raw, training


def format_info(directory: str | Path) -> str:
    config, backbone, training = read_model_info(directory)
    teacher_kind, teacher_pooling = config.head_spec(config.num_layers)
    lines = [
        f"model:          {directory}",
        f"backbone:       {backbone.get('model_type', '?')}, {config.num_layers} layers, hidden "
        f"{backbone.get('hidden_size', backbone.get('dim', '?'))}, "  # DistilBERT's config says dim and n_heads
        f"{backbone.get('num_attention_heads', backbone.get('n_heads', '?'))} attention heads, "
        f"vocab {backbone.get('vocab_size', '?')}",
        f"exits:          {', '.join(map(str, config.exit_layers))} (teacher: exit {config.num_layers})",
        *([f"static:         the first {config.num_layers} of the encoder's {config.truncated_from} layers "
           "(--num-layers)"] if config.truncated_from else []),
        f"exit heads:     {config.head}, {config.pooling} pooling, width {config.head_width}; "
        f"teacher: {teacher_kind}, {teacher_pooling} pooling" + _why(config, "pooling"),
        "task:           " + describe_task(config, ((training or {}).get("task") or {}).get("why")).replace("`", ""),
        f"labels ({config.num_labels}):    {', '.join(config.label_names) or 'none (a score)'}",
        f"objective:      {config.objective}" + (f" (recipe {config.recipe})" if config.recipe else ""),
        f"max length:     {config.max_length}" + _why(config, "max_length"),
        f"columns:        text={config.text_column}"
        + (f", pair={config.text_pair_column}" if config.text_pair_column else "")
        + f", label={config.label_column}",
        "default knobs:  " + (_describe_knobs(config) or "none (run `geep calibrate`)"),
        "default policy: " + (", ".join(f"{precision}: {policy}" for precision, policy in
                                        sorted(config.default_policy.items())) or "none (run `geep calibrate`)"),
        "exit table:     " + (_describe_table(config.exit_table) if config.exit_table
                              else "none (run `geep build-table`)"),
    ]
    if config.temperatures:
        lines.append("calibration:    " + _describe_temperatures(config))
    if config.class_means:
        lines.append(f"class means:    {config.class_means['file']}: {config.class_means.get('rows', '?')} rows from "
                     f"{config.class_means.get('source', '?')} (policy class-means)")
    if config.trust_score:
        t = config.trust_score
        lines.append(f"trust score:    {t['file']}: {t.get('rows', '?')} rows from {t.get('source', '?')}, at most "
                     f"{t.get('per_class', '?')} per class, alpha {t.get('alpha', '?')} (policy trust-score)")
    if config.token_hash:
        lines.append(f"token hash:     {config.token_hash['file']}: {config.token_hash['kind']}, "
                     f"{config.token_hash['buckets']} buckets (policy hashee)")
    if training:
        sizes = training.get("data_sizes", {})
        lines.append(f"trained on:     {training.get('train', '?')}: {sizes.get('train', '?')} rows; dev "
                     f"{sizes.get('dev', '?')} rows; exit-table slice {sizes.get('table', 0)} rows; "
                     f"{training.get('train_seconds', 0):.1f} s on {training.get('device', '?')}")
    metric = config.make_task().primary.replace("_", "-")
    lines += ["", f"per-exit dev {metric}:", format_accuracy_table(config.dev_accuracy, metric=metric)]
    return "\n".join(lines)


def format_cascade_info(directory: str | Path) -> str:
    """A cascade directory: its members (each read as ``geep info`` reads a model), its calibration."""
    from geep.modeling.cascade import CASCADE_NAME, CascadeConfig

    path = Path(directory) / CASCADE_NAME
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise GeepError(f"cannot read {path}: {e}") from None
    config = CascadeConfig.from_dict(data, path)
    lines = [f"cascade:        {directory} ({len(config.members)} members)",
             f"labels ({config.num_labels}):    {', '.join(config.label_names)}"]
    offset = 0
    for m, member in enumerate(config.members, 1):
        member_config, _, _ = read_model_info(Path(directory) / member)
        L = member_config.num_layers
        lines.append(f"member {m}:       {member}: {L} layers (cascade layers {offset + 1}..{offset + L}), exits "
                     f"{', '.join(map(str, member_config.exit_layers))}, objective {member_config.objective}")
        offset += L
    lines.append("default knobs:  " + (_describe_knobs(config) or "none (run `geep calibrate`)"))
    lines.append("temperatures:   " + ("; ".join(f"{p}: {', '.join(f'{t:.3f}' for t in ts)}"
                                                 for p, ts in sorted(config.temperatures.items())) or "none"))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from geep.modeling.cascade import is_cascade_dir

    print(format_cascade_info(args.model) if is_cascade_dir(args.model) else format_info(args.model))
    return 0


def _why(config: GeepConfig, setting: str) -> str:
    """How geep chose ``setting`` from the backbone (pooling auto, max length not given), on its own line."""
    reason = config.auto_settings.get(setting)
    return f"\n                (chosen by geep: {reason})" if reason else ""


def _describe_table(table: dict) -> str:
    """One line of the table's parameters and one of its exit histogram."""
    keys = f"{table.get('unigram_keys', '?')} tokens"
    if table.get("ngram") == 2:
        keys += f" + {table.get('bigram_keys', '?')} bigrams ({table.get('usable_bigram_keys', '?')} usable)"
    line = (f"{table.get('file')}: {table.get('rows')} rows from {table.get('source') or '?'}; keys: {keys}; "
            f"build threshold S={table.get('build_threshold')}, smoothing {table.get('smoothing')}, "
            f"combine {table.get('combine', 'mean')}")
    histogram = table.get("exit_histogram") or {}
    if histogram:
        line += "\n                exit histogram: " + ", ".join(f"layer {k}: {v}" for k, v in histogram.items())
    return line


def _describe_knobs(config: GeepConfig) -> str:
    """One line per precision and policy: the calibrated knob values and, where calibration recorded it, the bound
    it was chosen with (a knob calibrated before bounds existed shows its values alone)."""
    from geep.policies.base import knob_text

    lines = []
    for precision, per_policy in sorted(config.default_knobs.items()):
        for policy, values in sorted(per_policy.items()):
            line = f"{precision} {policy} " + knob_text(values, named=True)
            evidence = config.stored_evidence(precision, policy)
            if evidence:
                line += ": " + describe_evidence(evidence)
            lines.append(line)
    return "\n                ".join(lines)


def describe_evidence(evidence: dict) -> str:
    """What a knob was calibrated on, in words: its bound, confidence, point estimate, dev rows and target."""
    bound, confidence = evidence.get("drop_bound"), evidence.get("confidence")
    text = (f"accuracy drop <= {bound:.2f} points at {100 * confidence:g}% confidence" if bound is not None
            and confidence is not None else "no bound")
    if bound is not None and (evidence.get("policies") or 1) > 1:
        text += f", jointly with the other {evidence['policies'] - 1} policies calibrated"
    text += f" (dev drop {evidence.get('drop', float('nan')):.2f} points on {evidence.get('dev_rows', '?')} rows"
    if evidence.get("max_accuracy_drop") is not None:
        text += f"; budget {evidence['max_accuracy_drop']:g} points"
    if evidence.get("target_speedup") is not None:
        text += f"; target {evidence['target_speedup']:g}x"
    text += ")"
    if evidence.get("promised") is False:
        text += "; NOT promised: too few dev rows to keep the budget at that confidence"
    return text


def _describe_temperatures(config: GeepConfig) -> str:
    """Per precision, each exit's temperature (read by the confidence policy) and its expected calibration error on
    dev before -> after (15 equal-width bins), one line per exit."""
    lines = []
    for precision, temperatures in sorted(config.temperatures.items()):
        errors = config.calibration_error.get(precision) or {}
        before, after = errors.get("before") or [], errors.get("after") or []
        rows = errors.get("dev_rows")
        lines.append(f"{precision}: exit temperatures (confidence reads softmax(z / T)), expected calibration error "
                     f"on {rows if rows is not None else '?'} dev rows, 15 bins, before -> after:")
        for i, (k, t) in enumerate(zip(config.exit_layers, temperatures)):
            ece = (f"ECE {100 * before[i]:.2f}% -> {100 * after[i]:.2f}%" if i < len(before) and i < len(after)
                   else "ECE not recorded")
            lines.append(f"  exit {k:>2}: T = {t:.3f}, {ece}")
    return "\n                ".join(lines)
