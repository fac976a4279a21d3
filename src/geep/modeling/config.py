"""The ``geep`` section of ``config.json``: everything about a multi-exit model that is not the backbone's.

A saved model directory holds one ``config.json``: the backbone's own Hugging Face config with a ``geep``
section added. ``format_version`` guards the layout; an unknown version is a clear error. Version 1 (geep 0.1.0)
stored one number per policy as its default knob; version 2 stores named knob values per precision and policy
(``default_knobs``), and a version-1 section is read as the fp32 knobs of version 2.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from geep.errors import GeepError

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
HEAD_KINDS = ("attention", "linear")
POOLINGS = ("first", "mean")


@dataclass
class GeepConfig:
    """Configuration of the exits, the labels, the objective and the inference-side slots.

    Notation: L backbone layers; exit k reads h_k (k = 1..L); ``exit_layers`` is E and always contains L,
    whose head is the teacher T.
    """

    num_layers: int
    label_names: list[str]
    exit_layers: list[int] = field(default_factory=list)  # E; empty means all of 1..L
    head: str = "attention"
    pooling: str = "first"
    teacher_head: str | None = None  # None: same as `head` (a fine-tuned classifier's teacher is "linear")
    teacher_pooling: str | None = None  # None: same as `pooling`
    head_width: int = 128  # width of the attention head (FastBERT's 128)
    head_dropout: float = 0.1
    objective: str = "geep"
    # The geep objective's recipe (geep.modeling.objectives.RECIPES) that trained the model; None: another
    # objective, or a model saved before recipes existed (those were trained with the paper's loss).
    recipe: str | None = None
    max_length: int = 128
    text_column: str = "text"
    text_pair_column: str | None = None
    label_column: str = "label"
    # Filled by `geep calibrate`: {precision: {policy: {knob name: value}}}, e.g.
    # {"fp32": {"fastbert": {"threshold": 0.3}, "geep-verify": {"tau": 0.4, "continue_threshold": 0.25}}}.
    default_knobs: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    # Filled by `geep build-table`: file name and parameters of the token exit table, or None.
    exit_table: dict[str, Any] | None = None
    # Per-exit dev accuracy of the kept checkpoint, {str(k): accuracy}, written by training.
    dev_accuracy: dict[str, float] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        L = self.num_layers
        if not self.exit_layers:
            self.exit_layers = list(range(1, L + 1))
        exits = sorted(set(int(k) for k in self.exit_layers))
        bad = [k for k in exits if not 1 <= k <= L]
        if bad:
            raise GeepError(f"exit layers must lie in 1..{L}, got {bad}")
        if L not in exits:
            exits.append(L)  # the teacher always exists
        self.exit_layers = exits
        for name, value, allowed in (
            ("head", self.head, HEAD_KINDS),
            ("teacher head", self.teacher_head or self.head, HEAD_KINDS),
            ("pooling", self.pooling, POOLINGS),
            ("teacher pooling", self.teacher_pooling or self.pooling, POOLINGS),
        ):
            if value not in allowed:
                raise GeepError(f"unknown {name} {value!r}; choose one of: {', '.join(allowed)}")
        if len(self.label_names) < 2:
            raise GeepError(f"a classifier needs at least 2 labels, got {self.label_names}")
        _check_knobs(self.default_knobs)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def head_spec(self, k: int) -> tuple[str, str]:
        """(kind, pooling) of the head at exit ``k``."""
        if k == self.num_layers:
            return self.teacher_head or self.head, self.teacher_pooling or self.pooling
        return self.head, self.pooling

    def stored_knob(self, precision: str, policy: str) -> dict[str, float] | None:
        """The named knob values calibrated for ``policy`` at ``precision``, or None."""
        return self.default_knobs.get(precision, {}).get(policy)

    def store_knob(self, precision: str, policy: str, values: dict[str, float]) -> None:
        """Records ``policy``'s calibrated knob values at ``precision`` (the other precisions' stay)."""
        self.default_knobs.setdefault(precision, {})[policy] = {k: float(v) for k, v in values.items()}

    def drop_knobs(self, policies: Any) -> list[str]:
        """Forgets the stored knobs of ``policies`` at every precision; returns the policies that had one."""
        dropped = set()
        for knobs in self.default_knobs.values():
            dropped |= {p for p in policies if knobs.pop(p, None) is not None}
        self.default_knobs = {precision: knobs for precision, knobs in self.default_knobs.items() if knobs}
        return sorted(dropped)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GeepConfig":
        if not isinstance(data, dict):
            raise GeepError(f"the geep section of config.json must be an object, got {type(data).__name__}")
        version = data.get("format_version")
        if version not in READABLE_VERSIONS:
            raise GeepError(f"unknown geep format_version {version!r} in config.json (this geep reads versions "
                            f"{', '.join(map(str, READABLE_VERSIONS))})")
        if version == 1:
            data = _from_version_1(data)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise GeepError(f"unknown keys in the geep section of config.json: {', '.join(unknown)}")
        return cls(**data)


# The one knob of each policy in a version-1 (geep 0.1.0) config, by the name version 2 stores it under.
_V1_KNOB_NAMES = {"fastbert": "threshold", "deebert": "threshold", "confidence": "threshold", "pabee": "patience",
                  "geep": "tau", "geep-verify": "tau"}


def _from_version_1(data: dict[str, Any]) -> dict[str, Any]:
    """A version-1 geep section as version 2: its default knobs become the fp32 knobs, each under its name."""
    data = dict(data)
    knobs = data.get("default_knobs") or {}
    if not isinstance(knobs, dict):
        raise GeepError("default_knobs in config.json must be an object")
    data["default_knobs"] = {"fp32": {policy: {_V1_KNOB_NAMES.get(policy, "threshold"): value}
                                      for policy, value in knobs.items()}} if knobs else {}
    data["format_version"] = FORMAT_VERSION
    return data


def _check_knobs(knobs: Any) -> None:
    """default_knobs must be {precision: {policy: {name: number}}}: a damaged one is a one-line error."""
    ok = isinstance(knobs, dict) and all(
        isinstance(per_policy, dict) and all(
            isinstance(values, dict) and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                             for v in values.values())
            for values in per_policy.values())
        for per_policy in knobs.values())
    if not ok:
        raise GeepError("default_knobs in config.json must map precision -> policy -> {knob name: number}")
