"""The README.md model card written next to a trained model, and the per-exit accuracy table it shares with
the training log and ``geep info``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from geep.modeling.config import GeepConfig


def format_accuracy_table(accuracy: dict[str, float], markdown: bool = False, metric: str = "accuracy") -> str:
    """A table of per-exit dev scores, {str(k): score}, one row per exit in layer order; ``metric`` names the
    score (the task's primary metric: accuracy, micro-f1, pearson)."""
    rows = sorted(accuracy.items(), key=lambda kv: int(kv[0]))
    if not rows:
        return f"(no {metric} recorded)"
    last = max(int(k) for k, _ in rows)
    if markdown:
        lines = [f"| exit layer | dev {metric} |", "|---:|---:|"]
        lines += [f"| {k}{' (teacher)' if int(k) == last else ''} | {acc:.4f} |" for k, acc in rows]
        return "\n".join(lines)
    lines = [f"exit  dev {metric}"]
    lines += [f"{k:>4}  {acc:.4f}{'  (teacher)' if int(k) == last else ''}" for k, acc in rows]
    return "\n".join(lines)


def describe_objective(config: GeepConfig, summary: dict[str, Any]) -> str:
    """The objective, with the geep recipe's name and parameters (``summary["recipe"]``) and each stage's epochs."""
    text = f"`{config.objective}`"
    recipe = summary.get("recipe")
    if recipe:
        share = "1/(L-1)" if recipe["teacher_share"] is None else f"{recipe['teacher_share']:g}"
        text += (f", recipe `{recipe['name']}` (teacher share {share}, KL weight {recipe['kl_weight']:g}, "
                 f"temperature {recipe['temperature']:g}): {recipe['description']}")
    elif config.recipe:
        text += f", recipe `{config.recipe}`"
    stages = [f"{s['stage']} {s['epochs']} epoch(s)" + (" (skipped)" if s.get("skipped") else "")
              for s in summary.get("stages", [])]
    return text + (f"; trained: {', '.join(stages)}" if stages else "")


def describe_task(config: GeepConfig, why: str | None = None) -> str:
    """One line: the task, how it was chosen, its metric, and what the task stores (a regression target's scale; an
    exit module)."""
    task = config.make_task()
    text = f"`{task.name}`" + (f" ({why})" if why else "") + f"; metric {task.primary.replace('_', '-')}"
    if task.name == "regression":
        text += f"; target mean {task.target_mean:.4g}, std {task.target_std:.4g} (the heads learn the standardised score)"
    if config.exit_module:
        what = {"lte": "BERxiT's learned exit, policy `lte`",
                "ponder": "a learned halting head per exit, policy `ponder`"}.get(config.exit_module, "")
        text += f"; exit module `{config.exit_module}` ({what})"
    return text


def model_card(config: GeepConfig, backbone: dict[str, Any], summary: dict[str, Any]) -> str:
    """The README.md text of a trained model directory.

    ``backbone`` is the backbone's config.json dict; ``summary`` holds what training recorded (``model``,
    ``train``/``dev`` descriptions, data sizes, ``train_seconds``).
    """
    sizes = summary.get("data_sizes", {})
    labels = ", ".join(f"`{name}`" for name in config.label_names) or "none (a score)"
    metric = config.make_task().primary.replace("_", "-")
    why = (summary.get("task") or {}).get("why")
    exits = ", ".join(str(k) for k in config.exit_layers)
    pair = f", text pair column `{config.text_pair_column}`" if config.text_pair_column else ""
    teacher = config.teacher_head or config.head
    hidden = backbone.get("hidden_size", backbone.get("dim", "?"))  # DistilBERT's config says dim
    chosen = "".join(f"\n- **{setting.replace('_', ' ').capitalize()} chosen by geep**: {reason}"
                     for setting, reason in config.auto_settings.items())
    return f"""# geep multi-exit classifier

An early-exit text model trained with `geep` (GEEP, Li et al. 2024): a
`{backbone.get('model_type', '?')}` encoder ({config.num_layers} layers, hidden {hidden})
with an exit head after layers {exits}. Each exit can answer on its own, so easy inputs leave early.

- **Base model**: `{summary.get('model', '?')}`
- **Task**: {describe_task(config, why)}
- **Labels** ({config.num_labels}): {labels}
- **Objective**: {describe_objective(config, summary)}
- **Exit heads**: `{config.head}` with `{config.pooling}` pooling; teacher (exit {config.num_layers}): `{teacher}`
- **Max length**: {config.max_length} tokens; text column `{config.text_column}`{pair}, label column `{config.label_column}`{chosen}
- **Training data**: {summary.get('train', '?')} ({sizes.get('train', '?')} rows used for gradient steps);
  dev: {summary.get('dev', '?')} ({sizes.get('dev', '?')} rows); exit-table slice: {sizes.get('table', 0)} rows
- **Training time**: {summary.get('train_seconds', 0.0):.1f} s on {summary.get('device', '?')}

## Per-exit dev {metric}

{format_accuracy_table(config.dev_accuracy, markdown=True, metric=metric)}

## Use

```python
import geep

predictor = geep.Predictor.from_pretrained("{summary.get('output', 'THIS_DIR')}", policy="fastbert")
pred = predictor(["some text to classify"])
print(pred.labels, pred.exit_layer)
```

```bash
geep info {summary.get('output', 'THIS_DIR')}
```

`training_args.json` in this directory holds every training argument and the per-epoch dev accuracy.
"""


def write_model_card(directory: str | Path, config: GeepConfig, backbone: dict[str, Any],
                     summary: dict[str, Any]) -> Path:
    path = Path(directory) / "README.md"
    path.write_text(model_card(config, backbone, summary))
    return path
