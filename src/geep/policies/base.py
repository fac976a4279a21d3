"""What every exit policy is: a knob, a per-row memory, and a decision over the whole batch.

A policy is asked at each exit k of E (in order) about the rows still in the batch: ``decide`` takes the exit's
logits (B, C), the knob and the policy's per-row memory (a dict of (B, ...) tensors), and returns a (B,) bool
tensor of the rows that leave now, plus the updated memory. It never calls ``.item()`` or branches on a tensor;
the executor syncs once per step to drop the leaving rows, and the scheduler moves each row's memory with its hidden
state through every re-batching. The executor makes every row still running leave at the last exit L, whatever
the policy says. A policy never runs the model and never imports what does.

Each knob has a :class:`KnobSpec`: its range, its default, and the two values whose meaning is exact --
``never`` (no row exits before L) and ``first`` (every row exits at the first exit of E). Policies implement
those two values explicitly, never by hoping a float comparison saturates.

A policy declares the tasks it applies to (``tasks``; ``geep.tasks``) and what it reads (``reads``). Bound to a model's
output layout (:meth:`Policy.bind`, done once by ``geep.inference.spec.resolve_run``), it reads only the task's columns
of an exit's outputs (``self.layout.task_outputs``) and, for a learned exit, the exit module's signal after them. An
unbound policy reads every column as a class (a classification model without an exit module). A policy whose answer
is not the current exit's own (``vote``: the vote of every exit so far) sets ``answers_from_memory`` and says what the
leaving rows answer with (:meth:`Policy.outputs`); the executor then also asks it at the last exit.

A policy that reads ``calibrated`` probabilities (``confidence``, RightTool's rule) is given each exit's temperature
T_k once, by ``resolve_run`` (:meth:`Policy.with_temperatures`), when ``geep calibrate`` stored them, and reads
softmax(z_k / T_k) at exit k (it decides in :meth:`Policy.decide_at`, which knows the exit); without them it reads
the raw softmax, unchanged.

A policy that ``predicts_layers`` (``geep``, ``geep-verify``) also maps each row's predicted exit distribution to
a layer before the model runs (:meth:`Policy.predict_layers`); the scheduler then reads no head of that row before
it. Calibration scores knobs by running the same scheduler over recorded logits (``geep.runtime.replay``), so
there is no second copy of any decision here.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from geep.errors import GeepError
from geep.tasks import OutputLayout

Memory = dict[str, Tensor]
ALL_TASKS = ("classification", "multi-label", "regression")


@dataclass(frozen=True)
class KnobSpec:
    """A knob's range [low, high], its default, and its exact ends: ``never`` (no early exit) and ``first``
    (every row exits at the first exit). ``integer``: only whole numbers are allowed."""

    low: float
    high: float
    default: float
    never: float
    first: float
    integer: bool = False

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a number"
        return f"{kind} in [{_fmt(self.low)}, {_fmt(self.high)}]"


def _fmt(x: float) -> str:
    return f"{x:.7g}"


def knob_text(values: Mapping[str, float], *, named: bool = False) -> str:
    """A knob for people, the one rendering that `geep info`, the calibrate table and the bench reports share: its
    values in the policy's order, ``0.2/0.3`` (geep-verify's tau/t; a cascade's member knob, then each boundary's
    threshold), or with ``named`` ``tau=0.2, continue_threshold=0.3``; ``-`` when there is none."""
    if not values:
        return "-"
    if named:
        return ", ".join(f"{name}={_short(value)}" for name, value in values.items())
    return "/".join(_short(value) for value in values.values())


def _short(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:.4g}"


def entropy(logits: Tensor) -> Tensor:
    """Entropy (natural log) of softmax(logits) over the last axis, from log_softmax: (B, C) -> (B,)."""
    logp = F.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


class Policy:
    """An exit policy. Subclasses set ``name``, implement :meth:`knob_spec` and :meth:`decide`, and, where they
    remember something per row, :meth:`start`."""

    name: ClassVar[str]
    needs_labels: ClassVar[bool] = False  # decide reads memory["labels"] (B,) class ids
    reads_exits: ClassVar[bool] = True  # False: only the teacher's head is ever run (``full``)
    predicts_layers: ClassVar[bool] = False  # True: exits predicted from the model's exit table (``geep``)
    knob_names: ClassVar[tuple[str, ...]] = ()  # the names its knob values are stored under (config.json)
    schedule: ClassVar[str] = "shrink"  # the scheduling strategy it runs under by default (geep.scheduling)
    tasks: ClassVar[tuple[str, ...]] = ("classification",)  # the tasks (geep.tasks) it applies to
    reads: ClassVar[str] = "a softmax over classes"  # what it judges certainty from, for messages
    needs_signal: ClassVar[bool] = False  # reads the exit module's signal (a learned exit: ``lte``)
    exit_module: ClassVar[str | None] = None  # which exit module's signal it reads (``lte``, ``ponder``)
    needs_class_means: ClassVar[bool] = False  # reads fitted class-means distances (``class-means``)
    needs_trust_score: ClassVar[bool] = False  # reads fitted trust-score distances (``trust-score``)
    answers_from_memory: ClassVar[bool] = False  # rows answer with :meth:`outputs` of their memory (``vote``)
    calibrated: ClassVar[bool] = False  # reads softmax(z_k / T_k) where the model has temperatures (``confidence``)
    # tokens halt at the layers the model's token hash gives them (``hashee``): the executor asks the backend to
    # embed fresh rows that way, and the model needs a token hash
    halts_tokens: ClassVar[bool] = False
    layout: OutputLayout = OutputLayout()  # how its exits' outputs are laid out; set by :meth:`bind`
    temperatures: Mapping[int, float] | None = None  # exit layer -> T_k; set by :meth:`with_temperatures`

    def bind(self, layout: OutputLayout) -> "Policy":
        """A copy of the policy that reads exits laid out as ``layout`` (the model's task and exit module); the
        caller (``resolve_run``) has checked that the policy applies to ``layout.task``."""
        bound = copy.copy(self)
        bound.layout = layout
        return bound

    def with_temperatures(self, temperatures: Mapping[int, float]) -> "Policy":
        """A copy of the policy that reads exit k's class scores divided by ``temperatures[k]`` (temperature
        scaling, Guo et al. 2017), for a policy that reads ``calibrated`` probabilities; done once by
        ``resolve_run`` with the temperatures ``geep calibrate`` stored at the run's precision."""
        bound = copy.copy(self)
        bound.temperatures = {int(k): float(t) for k, t in temperatures.items()}
        return bound

    def scaled(self, layer: int, logits: Tensor) -> Tensor:
        """The task's columns of exit ``layer``'s outputs (B, K), divided by its temperature where the policy has
        temperatures (unchanged, not divided by 1, where it has none)."""
        scores = self.layout.task_outputs(logits).float()  # (B, K)
        if self.temperatures is None:
            return scores
        return scores / self.temperatures[layer]

    def outputs(self, logits: Tensor, memory: Memory) -> Tensor:
        """What rows leaving at this exit answer with, given its outputs (B, K + S) and the memory :meth:`decide`
        returned: the exit's own outputs, except for a policy that ``answers_from_memory``."""
        return logits

    @property
    def needs_table(self) -> bool:
        """Whether the policy needs the model's exit table."""
        return self.predicts_layers

    def knob_spec(self, num_labels: int, num_exits: int) -> KnobSpec | None:
        """The knob's range and ends for a model with C = num_labels classes and |E| = num_exits exits, or None
        for a policy without a knob."""
        return None

    def resolve_knob(self, knob: float | None, num_labels: int, num_exits: int, *,
                     build_threshold: float | None = None) -> float | None:
        """The knob to run with: ``knob`` checked against the range (GeepError naming it), or the default.

        ``build_threshold`` is the exit table's S, which ``geep-verify`` continues rows under."""
        spec = self.knob_spec(num_labels, num_exits)
        if spec is None:
            if knob is not None:
                raise GeepError(f"the {self.name} policy takes no threshold (got {knob})")
            return None
        if knob is None:
            return spec.default
        if isinstance(knob, bool):  # True is not the knob 1
            raise GeepError(f"the {self.name} threshold must be {spec.describe()}, got {knob!r}")
        try:
            value = float(knob)
        except (TypeError, ValueError):
            raise GeepError(f"the {self.name} threshold must be {spec.describe()}, got {knob!r}") from None
        tolerance = 1e-6 * max(1.0, abs(spec.high))  # a rounded ln C typed by hand still means ln C
        if not math.isfinite(value) or not spec.low <= value <= spec.high + tolerance:
            raise GeepError(f"the {self.name} threshold must be {spec.describe()}, got {knob}")
        if spec.integer:
            if not value.is_integer():
                raise GeepError(f"the {self.name} threshold must be {spec.describe()}, got {knob}")
            return int(value)
        return min(value, spec.high)

    def check_stored(self, stored: Mapping[str, float] | None, num_labels: int, num_exits: int, *,
                     build_threshold: float | None = None) -> None:
        """GeepError when the knob values stored for this policy in a model's config.json are unknown or out of
        range: said as a damaged file, not as a threshold the caller never passed."""
        if not stored:
            return
        try:
            unknown = [name for name in stored if name not in self.knob_names]
            if unknown:
                raise GeepError(f"the {self.name} policy has no knob {unknown[0]!r}")
            self.resolve_knob(self.knob_from_values(stored), num_labels, num_exits, build_threshold=build_threshold)
        except GeepError as e:
            values = ", ".join(f"{name}={value!r}" for name, value in stored.items())
            raise GeepError(f"the {self.name} knob calibrated in config.json ({values}) is damaged: {e}; run "
                            "`geep calibrate` again") from None

    def knob_values(self, knob: Any) -> dict[str, float]:
        """The knob as named values, as ``default_knobs`` stores it (``{}`` for a policy without a knob)."""
        if not self.knob_names or knob is None:
            return {}
        return {self.knob_names[0]: float(knob)}

    def knob_from_values(self, values: dict[str, float] | None) -> Any:
        """The knob stored as named values (the inverse of :meth:`knob_values`); None when nothing is stored."""
        if not values or not self.knob_names:
            return None
        return values.get(self.knob_names[0])

    def fill_knob(self, knob: Any, stored: Mapping[str, float] | None) -> Any:
        """The knob to resolve from what a caller gave: None takes ``stored`` (the model's calibrated named values,
        or None); named values ``{name: value}`` override the stored ones one by one (a value left out keeps its
        calibrated one, else the policy's default); anything else is the knob itself."""
        if knob is None:
            return self.knob_from_values(stored)
        if isinstance(knob, Mapping):
            for name, value in knob.items():
                if name not in self.knob_names:
                    if not self.knob_names:
                        raise GeepError(f"the {self.name} policy takes no threshold (got {name}={value})")
                    raise GeepError(f"the {self.name} policy has no knob {name!r}; its knobs: "
                                    f"{', '.join(self.knob_names)}")
            given = {name: value for name, value in knob.items() if value is not None}
            return self.knob_from_values({**(stored or {}), **given})
        return knob

    def grid(self, num_labels: int, num_exits: int, steps: int = 21) -> list[float | None]:
        """Knobs spanning the whole range, both ends included (``[None]`` for a policy without a knob)."""
        spec = self.knob_spec(num_labels, num_exits)
        if spec is None:
            return [None]
        if spec.integer:
            return list(range(int(spec.low), int(spec.high) + 1))
        values = [spec.low + (spec.high - spec.low) * i / (steps - 1) for i in range(steps)]
        values[-1] = spec.high  # exactly the end, not a rounding of it
        return values

    def start(self, batch_size: int, device: torch.device, labels: Tensor | None = None) -> Memory:
        """The per-row memory of a new batch (every tensor (B, ...)); ``labels`` (B,) for policies that need them."""
        return {}

    def decide(self, logits: Tensor, knob: float | None, memory: Memory) -> tuple[Tensor, Memory]:
        """(B,) bool: the rows that leave at this exit, given its logits (B, C); and the updated memory."""
        raise NotImplementedError

    def decide_at(self, layer: int, logits: Tensor, knob: Any, memory: Memory) -> tuple[Tensor, Memory]:
        """:meth:`decide` at exit ``layer`` (every row of a step is at one exit): what the executor calls. A policy
        whose rule depends on the exit (a cascade's member boundaries, ``geep.policies.cascade``) overrides it."""
        return self.decide(logits, knob, memory)

    def exits(self, exit_layers: Sequence[int], num_layers: int) -> list[int]:
        """The exits whose heads the policy reads (the scheduler's E): all of them, or L alone for a policy that
        does not read exits."""
        return list(exit_layers) if self.reads_exits else [num_layers]

    def confidence_at(self, layer: int, logits: Tensor, knob: Any = None) -> Tensor | None:
        """(B,) how confident the rule is in each row at exit ``layer`` (higher: more ready to leave), for a policy
        that ranks rows by a confidence (the bench's Difficulty Inversion Score); None for the others."""
        return None

    def predict_layers(self, distribution: Tensor, knob: Any, exit_layers: Sequence[int]) -> Tensor:
        """Each row's predicted exit layer (N,) in E from its exit distribution (N, L), for policies that
        ``predicts_layers``."""
        raise TypeError(f"{self.name} does not predict exit layers")


def select_memory(memory: Memory, keep: Tensor) -> Memory:
    """The memory of the rows picked by ``keep`` (long indices), every tensor indexed together."""
    return {name: value.index_select(0, keep) for name, value in memory.items()}


def none_leave(logits: Tensor) -> Tensor:
    return torch.zeros(logits.shape[0], dtype=torch.bool, device=logits.device)


def all_leave(logits: Tensor) -> Tensor:
    return torch.ones(logits.shape[0], dtype=torch.bool, device=logits.device)
