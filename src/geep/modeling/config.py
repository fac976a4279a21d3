"""The ``geep`` section of ``config.json``: everything about a multi-exit model that is not the backbone's.

A saved model directory holds one ``config.json``: the backbone's own Hugging Face config with a ``geep``
section added. ``format_version`` guards the layout; an unknown version is a clear error.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from geep.errors import GeepError

FORMAT_VERSION = 1
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
    max_length: int = 128
    text_column: str = "text"
    text_pair_column: str | None = None
    label_column: str = "label"
    # Filled by the inference side: {policy name: knob}, chosen by `geep calibrate`.
    default_knobs: dict[str, float] = field(default_factory=dict)
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

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def head_spec(self, k: int) -> tuple[str, str]:
        """(kind, pooling) of the head at exit ``k``."""
        if k == self.num_layers:
            return self.teacher_head or self.head, self.teacher_pooling or self.pooling
        return self.head, self.pooling

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GeepConfig":
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise GeepError(
                f"unknown geep format_version {version!r} in config.json (this geep reads version {FORMAT_VERSION})"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise GeepError(f"unknown keys in the geep section of config.json: {', '.join(unknown)}")
        return cls(**data)
