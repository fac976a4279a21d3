"""The ``geep`` section of ``config.json``: everything about a multi-exit model that is not the backbone's.

A saved model directory holds one ``config.json``: the backbone's own Hugging Face config with a ``geep``
section added. ``format_version`` guards the layout; an unknown version is a clear error. Version 1 (geep 0.1.0)
stored one number per policy as its default knob; version 2 stores named knob values per precision and policy
(``default_knobs``), and a version-1 section is read as the fp32 knobs of version 2. ``calibration`` (the confidence
bound each knob was chosen with) was added within version 2: a section without it reads as calibrated without
evidence.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from geep.errors import GeepError
from geep.tasks import TASKS, Task, get_task

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
HEAD_KINDS = ("attention", "linear")
# The teacher may also be "classifier": a fine-tuned model's own head, as its encoder family builds it.
TEACHER_KINDS = HEAD_KINDS + ("classifier",)
POOLINGS = ("first", "mean")
# BERxiT's learning-to-exit module (geep.modeling.heads.LearnedExit); learned halting, a head per exit
# (geep.modeling.heads.HaltingHeads, trained by the ponder objective)
EXIT_MODULES = ("lte", "ponder")


class StoredDefaults:
    """What calibration stores and predict reads, for a model's config and a cascade's alike: the knob values per
    precision and policy (``default_knobs``), the evidence each was chosen on (``calibration``) and the default
    policy per precision (``default_policy``)."""

    default_knobs: dict[str, dict[str, dict[str, float]]]
    default_policy: dict[str, str]
    calibration: dict[str, dict[str, dict[str, Any]]]
    # {precision: [T, ...]}: temperatures (Guo et al. 2017) fitted on dev by `geep calibrate`: a cascade's one per
    # member boundary, a model's one per exit (in exit order)
    temperatures: dict[str, list[float]]

    def stored_temperatures(self, precision: str) -> tuple[float, ...] | None:
        """The temperatures calibrated at ``precision`` (else fp32's), or None when none are stored."""
        stored = self.temperatures.get(precision) or self.temperatures.get("fp32")
        return tuple(float(t) for t in stored) if stored else None

    def temperatures_at(self, precision: str, count: int) -> tuple[float, ...]:
        """:meth:`stored_temperatures`, else 1 for each of ``count``."""
        return self.stored_temperatures(precision) or (1.0,) * count

    def stored_knob(self, precision: str, policy: str) -> dict[str, float] | None:
        """The named knob values calibrated for ``policy`` at ``precision``, or None."""
        return self.default_knobs.get(precision, {}).get(policy)

    def store_knob(self, precision: str, policy: str, values: dict[str, float],
                   evidence: dict[str, Any] | None = None) -> None:
        """Records ``policy``'s calibrated knob values at ``precision`` (the other precisions' stay), and the
        evidence it was chosen on (``calibration``); without evidence, any earlier record of it is forgotten."""
        self.default_knobs.setdefault(precision, {})[policy] = {k: float(v) for k, v in values.items()}
        if evidence is None:
            self.calibration.get(precision, {}).pop(policy, None)
            self.calibration = {p: records for p, records in self.calibration.items() if records}
        else:
            self.calibration.setdefault(precision, {})[policy] = dict(evidence)
        _check_calibration(self.calibration)

    def stored_evidence(self, precision: str, policy: str) -> dict[str, Any] | None:
        """What ``policy``'s knob at ``precision`` was calibrated on (confidence, bound, ...), or None."""
        return self.calibration.get(precision, {}).get(policy)

    def stored_policy(self, precision: str) -> str | None:
        """The default policy calibrated at ``precision``, or None."""
        return self.default_policy.get(precision)

    def store_policy(self, precision: str, policy: str) -> None:
        """Records ``policy`` as the default at ``precision`` (the other precisions' stay)."""
        self.default_policy[precision] = policy


@dataclass
class GeepConfig(StoredDefaults):
    """Configuration of the exits, the labels, the objective and the inference-side slots.

    Notation: L backbone layers; exit k reads h_k (k = 1..L); ``exit_layers`` is E and always contains L,
    whose head is the teacher T.
    """

    num_layers: int
    label_names: list[str]  # the classes (classification) or labels (multi-label), in output order; [] for regression
    exit_layers: list[int] = field(default_factory=list)  # E; empty means all of 1..L
    head: str = "attention"
    pooling: str = "first"
    teacher_head: str | None = None  # None: same as `head`; a fine-tuned classifier's is "linear" or "classifier"
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
    # Filled by `geep calibrate` beside each knob: {precision: {policy: evidence}}, the evidence being
    # {"confidence": 0.9, "drop_bound": 0.82, "drop": 0.47, "dev_rows": 213, "promised": true,
    #  "max_accuracy_drop": 1.0} (or "target_speedup": X): the upper bound on the knob's accuracy drop against full
    # (points) at that confidence, the point estimate, and whether the bound met the budget. Absent in directories
    # calibrated before it existed (then: {}); a knob stored without evidence has none.
    calibration: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    # Filled by `geep calibrate`: per precision, the calibrated policy that met the target fastest (with
    # --target-speedup: the most accurate one that met it), e.g. {"fp32": "geep-verify"}; predict and serve run it
    # when no policy is named. Absent in directories calibrated before it existed (then: {}).
    default_policy: dict[str, str] = field(default_factory=dict)
    # Filled by `geep build-table`: file name and parameters of the token exit table, or None.
    exit_table: dict[str, Any] | None = None
    # Per-exit dev score of the kept checkpoint, {str(k): score}, written by training: the task's primary metric
    # (accuracy for classification, micro-F1 for multi-label, Pearson for regression).
    dev_accuracy: dict[str, float] = field(default_factory=dict)
    # The encoder's own number of layers when this model is its first num_layers layers (`geep train --num-layers`,
    # a static baseline), else None.
    truncated_from: int | None = None
    # Why each setting geep chose from the backbone got its value, {setting: reason}, e.g. {"pooling": "mean: ..."};
    # filled by `MultiExitClassifier.from_encoder` for the settings left to it (geep.modeling.backbone_defaults).
    auto_settings: dict[str, str] = field(default_factory=dict)
    # The task the heads are trained for (geep.tasks): classification, multi-label or regression. Configs written
    # before tasks existed are classification.
    task: str = "classification"
    # regression: the training targets' mean and standard deviation (the heads learn the standardised score).
    target_mean: float | None = None
    target_std: float | None = None
    # multi-label: the separator a label column of joined names is split on (None: ",").
    label_separator: str | None = None
    # An exit module shared across the exits (EXIT_MODULES), whose signal trails every exit's outputs; None: none.
    exit_module: str | None = None
    # Class means fitted after training (`geep fit-means`, geep.modeling.class_means): {"file", "rows", "source"};
    # their C distances trail every exit's outputs. None: not fitted.
    class_means: dict | None = None
    # Trust-score sets fitted after training (`geep fit-means --statistics trust-score`, geep.modeling.trust_score):
    # {"file", "rows", "per_class", "alpha", "source"}; their C distances trail the class-means ones. None: not fitted.
    trust_score: dict | None = None
    # Filled by `geep calibrate` (classification): {precision: [T_k for k in exit_layers]}, each exit's temperature
    # (Guo et al. 2017) fitted on dev by NLL; the policies that read calibrated probabilities (``confidence``) read
    # softmax(z_k / T_k). Absent (then: {}): they read raw probabilities, as before it existed.
    temperatures: dict[str, list[float]] = field(default_factory=dict)
    # Filled with the temperatures: {precision: {"before": [ECE_k], "after": [ECE_k], "dev_rows": N}}, each exit's
    # expected calibration error on those dev rows (15 equal-width bins) under raw and calibrated probabilities.
    calibration_error: dict[str, dict[str, Any]] = field(default_factory=dict)
    # HashEE's token-to-layer hash (geep.modeling.token_hash), saved beside the model: {"file", "kind", "buckets"};
    # None: the model has none (only `geep train --objective hashee` makes one).
    token_hash: dict | None = None
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        _check_types(self)
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
            ("teacher head", self.teacher_head or self.head, TEACHER_KINDS),
            ("pooling", self.pooling, POOLINGS),
            ("teacher pooling", self.teacher_pooling or self.pooling, POOLINGS),
        ):
            if value not in allowed:
                raise GeepError(f"unknown {name} {value!r}; choose one of: {', '.join(allowed)}")
        if self.task not in TASKS:
            raise GeepError(f"unknown task {self.task!r} in config.json; choose one of: {', '.join(TASKS)}")
        if self.exit_module is not None and self.exit_module not in EXIT_MODULES:
            raise GeepError(f"unknown exit module {self.exit_module!r}; choose one of: {', '.join(EXIT_MODULES)}")
        get_task(self.task).check_label_names(self.label_names)
        repeated = sorted({name for name in self.label_names if self.label_names.count(name) > 1})
        if repeated:  # two outputs of one name: a predicted name could not say which output it was
            raise GeepError(f"label names must be distinct; repeated: {', '.join(map(repr, repeated))}")
        self.make_task()  # a regression config without its target scale fails here
        if self.task == "token-classification" and (self.exit_module is not None or self.class_means):
            raise GeepError("a token classifier takes no exit module and no class means (they read a pooled row)")
        _check_knobs(self.default_knobs)
        _check_calibration(self.calibration)
        bad = [p for p, ts in self.temperatures.items() if len(ts) != len(self.exit_layers)]
        if bad:
            raise GeepError(f"the geep section of config.json is damaged: temperatures at {bad[0]} has "
                            f"{len(self.temperatures[bad[0]])} values for {len(self.exit_layers)} exits; run "
                            "`geep calibrate` again")

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def make_task(self) -> Task:
        """The model's task (``geep.tasks``), bound to its labels and target scale."""
        cls = get_task(self.task)
        kwargs: dict[str, Any] = {"label_names": tuple(self.label_names)}
        if self.task == "regression":
            if self.target_mean is None or self.target_std is None:
                raise GeepError("a regression model's config needs target_mean and target_std")
            kwargs.update(target_mean=float(self.target_mean), target_std=float(self.target_std))
        if self.task == "multi-label" and self.label_separator is not None:
            kwargs["separator"] = self.label_separator
        if self.task == "token-classification":  # K = M (C + 1): a fixed width per row of M tokens
            kwargs["positions"] = int(self.max_length)
        return cls(**kwargs)

    @property
    def num_outputs(self) -> int:
        """K: the columns each exit head outputs for the task (C classes, C labels, 1 score)."""
        return self.make_task().num_outputs

    @property
    def num_signals(self) -> int:
        """S: the columns after the task's at every exit: the exit module's (1 with ``lte`` or ``ponder``), then the C class-means
        distances once they are fitted, then the C trust-score distances once those are."""
        return ((0 if self.exit_module is None else 1) + (self.num_labels if self.class_means else 0)
                + (self.num_labels if self.trust_score else 0))

    def head_spec(self, k: int) -> tuple[str, str]:
        """(kind, pooling) of the head at exit ``k``."""
        if k == self.num_layers:
            return self.teacher_head or self.head, self.teacher_pooling or self.pooling
        return self.head, self.pooling

    def drop_knobs(self, policies: Any) -> list[str]:
        """Forgets the stored knobs of ``policies`` at every precision, and any default policy among them; returns
        the policies that had a knob."""
        dropped = set()
        for knobs in self.default_knobs.values():
            dropped |= {p for p in policies if knobs.pop(p, None) is not None}
        self.default_knobs = {precision: knobs for precision, knobs in self.default_knobs.items() if knobs}
        for records in self.calibration.values():
            for p in policies:
                records.pop(p, None)
        self.calibration = {precision: records for precision, records in self.calibration.items() if records}
        self.default_policy = {precision: p for precision, p in self.default_policy.items() if p not in policies}
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
        missing = sorted(f.name for f in dataclasses.fields(cls) if f.name not in data
                         and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
        if missing:
            raise GeepError(f"the geep section of config.json is damaged: it lacks {', '.join(missing)}")
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


def _check_calibration(records: Any) -> None:
    """calibration must be {precision: {policy: {name: number, bool or null}}} (``metric``: the metric's name): a
    damaged one is a one-line error."""
    ok = isinstance(records, dict) and all(
        isinstance(per_policy, dict) and all(
            isinstance(evidence, dict) and all(
                isinstance(k, str)
                and (v is None or isinstance(v, (int, float)) or (k == "metric" and isinstance(v, str)))
                for k, v in evidence.items())
            for evidence in per_policy.values())
        for per_policy in records.values())
    if not ok:
        raise GeepError("calibration in config.json must map precision -> policy -> {name: number, true/false or "
                        "null}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# What each field of a GeepConfig must hold, checked on construction so that a damaged config.json is one line
# (not an AttributeError far away): (test, what it must be).
_FIELD_TYPES: dict[str, tuple[Any, str]] = {
    "num_layers": (lambda v: _is_int(v) and v >= 1, "a positive integer"),
    "label_names": (lambda v: isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v),
                    "a list of strings"),
    "exit_layers": (lambda v: isinstance(v, (list, tuple, range)) and all(_is_int(x) for x in v),
                    "a list of integers"),
    "head": (lambda v: isinstance(v, str), "a string"),
    "pooling": (lambda v: isinstance(v, str), "a string"),
    "teacher_head": (lambda v: v is None or isinstance(v, str), "a string or null"),
    "teacher_pooling": (lambda v: v is None or isinstance(v, str), "a string or null"),
    "head_width": (lambda v: _is_int(v) and v >= 1, "a positive integer"),
    "head_dropout": (lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "objective": (lambda v: isinstance(v, str), "a string"),
    "recipe": (lambda v: v is None or isinstance(v, str), "a string or null"),
    "max_length": (lambda v: _is_int(v) and v >= 2, "an integer >= 2"),
    "text_column": (lambda v: isinstance(v, str), "a string"),
    "text_pair_column": (lambda v: v is None or isinstance(v, str), "a string or null"),
    "label_column": (lambda v: isinstance(v, str), "a string"),
    "exit_table": (lambda v: v is None or (isinstance(v, dict) and isinstance(v.get("file"), str)
                                           and v["file"] not in ("", ".", "..") and "/" not in v["file"]
                                           and "\\" not in v["file"] and _is_number(v.get("build_threshold"))),
                   "null or an object with a file name and a build_threshold"),
    "default_policy": (lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values()),
                       "an object of precision -> policy name"),
    "dev_accuracy": (lambda v: isinstance(v, dict) and all(_is_number(x) for x in v.values()),
                     "an object of exit -> number"),
    "auto_settings": (lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values()),
                      "an object of setting -> reason"),
    "task": (lambda v: isinstance(v, str), "a string"),
    "target_mean": (lambda v: v is None or _is_number(v), "a number or null"),
    "target_std": (lambda v: v is None or _is_number(v), "a number or null"),
    "label_separator": (lambda v: v is None or (isinstance(v, str) and v != ""), "a non-empty string or null"),
    "exit_module": (lambda v: v is None or isinstance(v, str), "a string or null"),
    "truncated_from": (lambda v: v is None or (_is_int(v) and v >= 1), "a positive integer or null"),
    "class_means": (lambda v: v is None or (isinstance(v, dict) and isinstance(v.get("file"), str)
                                            and v["file"] not in ("", ".", "..") and "/" not in v["file"]
                                            and "\\" not in v["file"]), "null or an object with a file name"),
    "temperatures": (lambda v: isinstance(v, dict) and all(
        isinstance(ts, list) and all(_is_number(t) and t > 0 for t in ts) for ts in v.values()),
        "an object of precision -> list of positive temperatures"),
    "calibration_error": (lambda v: isinstance(v, dict) and all(
        isinstance(e, dict) and all(isinstance(e.get(k), list) and all(_is_number(x) for x in e[k])
                                    for k in ("before", "after")) for e in v.values()),
        "an object of precision -> {before: [...], after: [...]}"),
    "trust_score": (lambda v: v is None or (isinstance(v, dict) and isinstance(v.get("file"), str)
                                            and v["file"] not in ("", ".", "..") and "/" not in v["file"]
                                            and "\\" not in v["file"]), "null or an object with a file name"),
    "token_hash": (lambda v: v is None or (isinstance(v, dict) and isinstance(v.get("file"), str)
                                           and v["file"] not in ("", ".", "..") and "/" not in v["file"]
                                           and "\\" not in v["file"] and isinstance(v.get("kind"), str)
                                           and _is_int(v.get("buckets")) and v["buckets"] >= 1),
                   "null or an object with a file name, a kind and a number of buckets"),
    "format_version": (_is_int, "an integer"),
}


def _check_types(config: GeepConfig) -> None:
    """Every field holds what it must (default_knobs has its own check); GeepError naming the first that does not."""
    for name, (ok, expected) in _FIELD_TYPES.items():
        value = getattr(config, name)
        if not ok(value):
            raise GeepError(f"the geep section of config.json is damaged: {name} must be {expected}, got {value!r:.60}")
