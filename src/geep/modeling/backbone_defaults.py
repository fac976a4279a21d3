"""Settings read from a pretrained backbone's own files when the user leaves them to geep: pooling and max length.

- Pooling (``auto``): a sentence-transformers model was trained to be read through the pooling its
  ``1_Pooling/config.json`` names (found through ``modules.json``), and its first token means little on its own:
  the packaged MiniLM (mean-pooled in training) collapses to the majority class at shallow first-token exits. Mean
  tokens -> ``mean``; the CLS token -> ``first``; max, mean-sqrt-len, weighted mean or last token, which geep's
  heads do not have -> ``mean``, with a warning. Without such a file: ``first``, as BERT-style encoders are
  pre-trained (their [CLS] token feeds the next-sentence head).
- Max length (not given): the smallest of 128 and what the backbone allows: its position embeddings, the
  tokenizer's ``model_max_length`` (ignoring the huge value tokenizers use for "no limit") and a
  sentence-transformers ``max_seq_length`` (``sentence_bert_config.json``).

Each choice comes with its reason, stored in the config (``GeepConfig.auto_settings``) and shown by ``geep info``
and the model card.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

MAX_LENGTH_CAP = 128  # tokens; longer costs quadratic attention for little accuracy on classification
NO_LIMIT = 10**9  # a tokenizer's model_max_length at or above this means "no limit" (transformers uses 1e30)
POOLING_FILE = "1_Pooling/config.json"


@dataclass(frozen=True)
class Choice:
    """A value geep chose for a setting and why, in words."""

    value: Any
    reason: str


def auto_pooling(path: str | Path) -> Choice:
    """The exit heads' pooling for the backbone in ``path``: ``first`` or ``mean`` (see the module docstring)."""
    found = _pooling_config(Path(path))
    if found is None:
        return Choice("first", f"first: the backbone has no sentence-transformers pooling ({POOLING_FILE}), so "
                               "its first token, as BERT-style encoders are pre-trained")
    where, config = found
    modes = sorted(key[len("pooling_mode_"):] for key, on in config.items()
                   if key.startswith("pooling_mode_") and on is True)
    if isinstance(config.get("pooling_mode"), str):
        modes = sorted(set(modes) | {config["pooling_mode"]})
    if modes in (["mean"], ["mean_tokens"]):
        return Choice("mean", f"mean: the backbone is a sentence-transformers model trained with mean pooling "
                              f"({where})")
    if modes in (["cls"], ["cls_token"]):
        return Choice("first", f"first: the backbone is a sentence-transformers model trained with CLS-token pooling "
                               f"({where})")
    if not modes:
        return Choice("first", f"first: the backbone's sentence-transformers pooling ({where}) names no mode")
    logger.warning("the backbone was trained with %s pooling (%s), which geep's exit heads do not have; using mean "
                   "pooling (pass --pooling first or mean to choose)", " + ".join(modes), where)
    return Choice("mean", f"mean: the backbone's sentence-transformers pooling ({where}) is {' + '.join(modes)}, "
                          "which geep's heads do not have; mean is the nearest")


def auto_max_length(path: str | Path, positions: int | None, tokenizer: Any = None) -> Choice:
    """The smallest of MAX_LENGTH_CAP, ``positions`` (the backbone's usable positions), the tokenizer's
    ``model_max_length`` and a sentence-transformers ``max_seq_length`` found beside the backbone in ``path``."""
    limits = [(MAX_LENGTH_CAP, f"geep's cap {MAX_LENGTH_CAP}")]
    if positions is not None:
        limits.append((positions, f"the model's {positions} positions"))
    model_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(model_max, int) and 0 < model_max < NO_LIMIT:
        limits.append((model_max, f"the tokenizer's model_max_length {model_max}"))
    seq = _max_seq_length(Path(path))
    if seq is not None:
        limits.append((seq, f"sentence-transformers' max_seq_length {seq}"))
    value = min(v for v, _ in limits)
    return Choice(value, f"{value}: the smallest of " + ", ".join(why for _, why in limits))


def _st_roots(path: Path) -> list[Path]:
    """Directories that may hold the sentence-transformers files of the backbone in ``path``: ``path`` itself, and
    its parent when ``path`` is one of the parent's modules (the older layout: the encoder in ``0_Transformer``)."""
    roots = [path]
    modules = _read_json(path.parent / "modules.json")
    if isinstance(modules, list) and any(isinstance(m, dict) and m.get("path") == path.name for m in modules):
        roots.append(path.parent)
    return roots


def _pooling_config(path: Path) -> tuple[str, dict] | None:
    """(where, its JSON) of the backbone's sentence-transformers pooling config, or None."""
    for root in _st_roots(path):
        modules = _read_json(root / "modules.json")
        candidates = [m.get("path") for m in modules if isinstance(m, dict) and str(m.get("type", "")).endswith(
            "Pooling") and isinstance(m.get("path"), str)] if isinstance(modules, list) else []
        for sub in candidates or ["1_Pooling"]:
            config = _read_json(root / sub / "config.json")
            if isinstance(config, dict):
                return f"{sub}/config.json" + ("" if root == path else " one directory up"), config
    return None


def _max_seq_length(path: Path) -> int | None:
    for root in _st_roots(path):
        config = _read_json(root / "sentence_bert_config.json")
        value = config.get("max_seq_length") if isinstance(config, dict) else None
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _read_json(path: Path) -> Any:
    """The JSON in ``path``, or None when there is no such file; a file that is not JSON is warned about."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        logger.warning("ignoring %s: not readable JSON (%s)", path, str(e).splitlines()[0] if str(e) else e)
        return None
