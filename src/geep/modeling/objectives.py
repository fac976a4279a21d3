"""Training objectives: pure loss functions of the exit logits and the labels, with declared stages.

Notation: L layers, exits E (a subset of 1..L that contains L), teacher T = the head at exit L, students
S_k for k in E, k < L.

``exit_logits`` (|E|, B, K): the outputs of every exit, in the order of E, so ``exit_logits[-1]`` is T(h_L).
``diverse_logits`` (L-2, B, K): T(Layer_L(h_k)) for k = 1..L-2 ("diverse Transformer outputs"); only the
objectives whose stage says ``needs_diverse`` get them.

Every loss takes the model's task (``geep.tasks``: ``task=``, default classification) and uses the task's exit loss
and distillation (classification: cross entropy and the KL of softmaxes; multi-label: binary cross entropy and the
per-label binary KL of sigmoids; regression: squared error to the standardised score and to the teacher's output),
so every objective applies to every task (but one that declares ``tasks``: ``ensemble``). A model with an exit
module (``--exit-module lte``) also trains it, at every step of every stage, on :func:`learned_exit_loss` (its input
detached: it never moves the rest of the model).

An objective is a list of :class:`Stage`s run in order. Each stage names the parameter groups it trains
("backbone", "teacher", "students"), which epoch count it uses, and its loss (and, for BERxiT, the loss of every
other step: ``alternate``).

The ``geep`` objective comes in named recipes (:class:`Recipe`, ``RECIPES``): ``paper`` is the paper's loss exactly
(:func:`geep_loss`); the others weight its terms (:func:`weighted_geep_loss`) and may train for as many passes over
the data as a two-stage objective makes (``--epochs`` + ``--distil-epochs``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from geep.errors import GeepError
from geep.modeling.losses.ensemble import ensemble_loss
from geep.modeling.losses.ponder import ponder_loss
from geep.modeling.losses.hashee import hashee_loss
from geep.modeling.losses.sdn import sdn_loss, sdn_schedule
from geep.tasks import Task
from geep.tasks.classification import Classification, distillation_kl, per_exit_cross_entropy  # noqa: F401 (re-exported)

LossFn = Callable[..., Tensor]
CLASSIFICATION = Classification(("0", "1"))  # what a loss computes when no task is passed (its labels are not read)


def cross_entropy_sum(logits: Tensor, labels: Tensor) -> Tensor:
    """sum over the leading axis of the batch-mean cross entropy; logits (S, B, C), labels (B,)."""
    return exit_loss_sum(logits, labels, CLASSIFICATION)


def exit_loss_sum(outputs: Tensor, targets: Tensor, task: Task) -> Tensor:
    """sum over the leading axis of each exit's batch-mean task loss; outputs (S, B, K)."""
    if outputs.shape[0] == 0:
        return outputs.new_zeros(())
    return task.per_exit_loss(outputs, targets).sum()


def geep_loss(exit_logits: Tensor, diverse_logits: Tensor | None, labels: Tensor, exit_layers: list[int], *,
              task: Task = CLASSIFICATION) -> Tensor:
    """GEEP's one-step loss.

    sum_{k=1..L-1} loss(T(Layer_L(h_k)), y) + sum_{k in E, k<L} D(T || S_k), with the task's exit loss and
    distillation D (classification: CE and KL(p_T || p_k)); the k = L-1 term is the ordinary path T(h_L)
    (= exit_logits[-1]).
    """
    if diverse_logits is None:
        raise ValueError("the geep objective needs the diverse logits")
    teacher = exit_logits[-1]  # (B, K)
    ce = exit_loss_sum(torch.cat([diverse_logits, teacher[None]]), labels, task)  # L-1 terms
    return ce + task.distillation(exit_logits[:-1], teacher)


def diverse_weights(num_terms: int, teacher_share: float | None) -> Tensor:
    """Weights of GEEP's L-1 cross-entropy terms, k = 1..L-1 (the last is the teacher's own path, k = L-1).

    ``teacher_share`` None: every term weighs 1 (the paper's). Otherwise the teacher's path gets that share of
    the total, the L-2 other terms share the rest equally, and the weights still sum to L-1, so this knob moves
    weight between the CE terms without changing their total against the KL terms. Returns (L-1,).
    """
    if teacher_share is None or num_terms == 1:
        return torch.ones(num_terms)
    if not 0 < teacher_share < 1:
        raise ValueError(f"teacher share must lie in (0, 1), got {teacher_share}")
    others = torch.full((num_terms - 1,), (1 - teacher_share) * num_terms / (num_terms - 1))
    return torch.cat([others, torch.tensor([teacher_share * num_terms])])


def weighted_geep_loss(exit_logits: Tensor, diverse_logits: Tensor | None, labels: Tensor, exit_layers: list[int],
                       *, teacher_share: float | None = None, kl_weight: float = 1.0,
                       temperature: float = 1.0, task: Task = CLASSIFICATION) -> Tensor:
    """GEEP's one-step loss with its weights made explicit.

    sum_{k=1..L-1} w_k loss(T(Layer_L(h_k)), y) + kl_weight * D_t(T || S_k) summed over k in E, k<L, where
    w = :func:`diverse_weights` (``teacher_share``) and D_t the task's distillation at temperature t
    (classification: t^2 KL(p_T^t || p_k^t), p^t = softmax(logits / t)). With the defaults (None, 1, 1) it is
    :func:`geep_loss`. Shapes as :func:`geep_loss`.
    """
    if diverse_logits is None:
        raise ValueError("the geep objective needs the diverse logits")
    teacher = exit_logits[-1]  # (B, K)
    ce = task.per_exit_loss(torch.cat([diverse_logits, teacher[None]]), labels)  # (L-1,)
    weights = diverse_weights(len(ce), teacher_share).to(ce)
    return (weights * ce).sum() + kl_weight * task.distillation(exit_logits[:-1], teacher, temperature)


def teacher_loss(exit_logits: Tensor, diverse_logits: Tensor | None, labels: Tensor, exit_layers: list[int], *,
                 task: Task = CLASSIFICATION) -> Tensor:
    """loss(T(h_L), y): ordinary fine-tuning of the backbone and the teacher (classification: CE)."""
    return task.loss(exit_logits[-1], labels)


def student_distillation_loss(exit_logits: Tensor, diverse_logits: Tensor | None, labels: Tensor,
                              exit_layers: list[int], *, task: Task = CLASSIFICATION) -> Tensor:
    """FastBERT's second stage: sum_{k<L} D(T || S_k) (classification: KL(p_T || p_k))."""
    return task.distillation(exit_logits[:-1], exit_logits[-1])


def student_cross_entropy_loss(exit_logits: Tensor, diverse_logits: Tensor | None, labels: Tensor,
                               exit_layers: list[int], *, task: Task = CLASSIFICATION) -> Tensor:
    """DeeBERT's second stage: sum_{k<L} loss(S_k(h_k), y) (classification: CE)."""
    return exit_loss_sum(exit_logits[:-1], labels, task)


def pabee_loss(exit_logits: Tensor, diverse_logits: Tensor | None, labels: Tensor, exit_layers: list[int], *,
               task: Task = CLASSIFICATION) -> Tensor:
    """PABEE: sum_k k * loss(S_k(h_k), y) / sum_k k over every exit, the teacher's included."""
    weights = torch.tensor(exit_layers, dtype=exit_logits.dtype, device=exit_logits.device)  # (|E|,)
    return (weights * task.per_exit_loss(exit_logits, labels)).sum() / weights.sum()


def every_exit_loss(exit_logits: Tensor, diverse_logits: Tensor | None, labels: Tensor, exit_layers: list[int], *,
                    task: Task = CLASSIFICATION) -> Tensor:
    """sum_{k in E} loss(S_k(h_k), y): every exit's loss, the teacher's included (BERxiT's even steps)."""
    return exit_loss_sum(exit_logits, labels, task)


def learned_exit_loss(exit_signals: Tensor, exit_logits: Tensor, labels: Tensor, *, task: Task) -> Tensor:
    """BERxiT's learning-to-exit loss: sum_k mean_B (sigmoid(u_k) - t_k)^2, where t_k = ``task.exit_is_right`` of
    exit k's outputs (detached: the target, not something to move) and u_k the module's logit at exit k.
    exit_signals (|E|, B, 1), exit_logits (|E|, B, K)."""
    target = task.exit_is_right(exit_logits.detach(), labels)  # (|E|, B)
    return ((torch.sigmoid(exit_signals[..., 0]) - target) ** 2).mean(1).sum()


# CascadeBERT's difficulty-aware regularisation (Li et al., Findings of EMNLP 2021, Sec. 4, and their released
# run script's defaults: margin 0.3, weight 0.5).
DA_MARGIN, DA_WEIGHT = 0.3, 0.5


def difficulty_ranking_loss(confidence: Tensor, difficulty: Tensor, margin: float = DA_MARGIN) -> Tensor:
    """CascadeBERT's difficulty-aware regulariser: an easy row (d = 0) should be more confident than a hard one
    (d = 1) by ``margin``: mean over the batch's (easy i, hard j) pairs of max(0, margin - (c_i - c_j)), a margin
    ranking loss on c = max_c softmax(logits). (Their code samples one hard row per easy row; every pair is used here,
    the same loss in expectation.) confidence (B,), difficulty (B,) in {0, 1}; 0 when the batch lacks either kind."""
    hard = difficulty.bool()
    easy_c, hard_c = confidence[~hard], confidence[hard]
    if easy_c.numel() == 0 or hard_c.numel() == 0:
        return confidence.sum() * 0.0  # keeps the graph: a zero that still backpropagates
    gaps = easy_c[:, None] - hard_c[None, :]  # (easy, hard)
    return F.relu(margin - gaps).mean()


def difficulty_aware_loss(exit_logits: Tensor, diverse_logits: Tensor | None, labels: Tensor, exit_layers: list[int],
                          *, difficulty: Tensor, weight: float = DA_WEIGHT, margin: float = DA_MARGIN,
                          task: Task = CLASSIFICATION) -> Tensor:
    """CascadeBERT's objective for a member: sum_k CE(S_k(h_k), y) over every exit (the teacher's included) +
    weight * :func:`difficulty_ranking_loss` of the teacher's confidence, the exit the cascade rule reads.
    ``difficulty`` (B,): 1 for the rows the model answered wrongly after its first stage."""
    if task.name != "classification":
        raise ValueError("the difficulty-aware loss reads a classifier's confidence")  # refused at `geep train`
    confidence = F.softmax(exit_logits[-1], dim=-1).max(-1).values  # (B,)
    return cross_entropy_sum(exit_logits, labels) + weight * difficulty_ranking_loss(confidence, difficulty, margin)


@dataclass(frozen=True)
class Stage:
    """One pass of training: which parameter groups learn, for how many epochs, under which loss."""

    name: str
    loss: LossFn
    trains: tuple[str, ...]  # subset of ("backbone", "teacher", "students")
    # which CLI count this stage uses: "epochs", "distil_epochs", or "passes" (epochs + distil_epochs: as many
    # passes over the data as a two-stage objective makes)
    epochs: str = "epochs"
    needs_diverse: bool = False
    # BERxiT's alternating fine-tuning: steps 2, 4, ... take this loss instead of ``loss`` (None: every step ``loss``).
    alternate: LossFn | None = None
    # the loss takes ``difficulty=`` (B,): 1 for each row the model answered wrongly when the stage began
    needs_difficulty: bool = False
    # A loss whose weights follow training (SDN's): schedule(progress) is the loss of a step taken when that fraction
    # of the stage's steps is done, this one included (None: the loss does not change with progress).
    schedule: Callable[[float], LossFn] | None = None
    # the loss takes ``exit_signals=`` (|E|, B, S): the exit module's outputs (learned halting's), which it trains
    # itself (the loop then adds no exit-module loss of its own)
    needs_signals: bool = False
    # HashEE: the forward halts each token at the layer the model's token hash gives it (the training loop runs
    # ``geep.runtime.token_halting.halting_forward``), and so does dev evaluation.
    halts_tokens: bool = False

    def loss_at(self, step: int, progress: float = 1.0) -> LossFn:
        """The loss of training step ``step`` (1-based, counted over the whole stage: BERxiT's alternation does not
        restart at an epoch), taken at ``progress`` (the fraction of the stage's steps done, this one included)."""
        if self.schedule is not None:
            return self.schedule(progress)
        return self.alternate if self.alternate is not None and step % 2 == 0 else self.loss


@dataclass(frozen=True)
class Recipe:
    """A weighting of GEEP's one-step loss (see :func:`weighted_geep_loss`) and the epochs it trains for."""

    name: str
    description: str
    teacher_share: float | None = None  # None: every CE term weighs 1 (the paper's: 1/(L-1) for the teacher)
    kl_weight: float = 1.0  # the KL sum against the CE sum
    temperature: float = 1.0  # distillation temperature (KL scaled by t^2)
    epochs: str = "epochs"  # "epochs", or "passes": --epochs + --distil-epochs

    @property
    def is_paper(self) -> bool:
        return self.teacher_share is None and self.kl_weight == 1.0 and self.temperature == 1.0

    def loss(self) -> LossFn:
        """The paper's :func:`geep_loss` itself for the paper's weights, else :func:`weighted_geep_loss`."""
        if self.is_paper:
            return geep_loss
        return partial(weighted_geep_loss, teacher_share=self.teacher_share, kl_weight=self.kl_weight,
                       temperature=self.temperature)

    def to_dict(self) -> dict[str, Any]:
        """What training_args.json records: the name and every parameter."""
        return {"name": self.name, "teacher_share": self.teacher_share, "kl_weight": self.kl_weight,
                "temperature": self.temperature, "epochs": self.epochs, "description": self.description}


@dataclass(frozen=True)
class Objective:
    name: str
    stages: tuple[Stage, ...]
    description: str
    recipe: Recipe | None = None  # the geep objective's recipe
    tasks: tuple[str, ...] | None = None  # the tasks it applies to (None: every task)
    exit_module: str | None = None  # the exit module it trains and needs (``ponder``: halting heads)

    def check_task(self, task: str) -> None:
        """A GeepError when this objective does not apply to ``task`` (a task name)."""
        if self.tasks is not None and task not in self.tasks:
            raise GeepError(f"--objective {self.name} applies to {', '.join(self.tasks)} only, not {task}")


_PASSES = "epochs = --epochs + --distil-epochs (fastbert's passes over the data)"
RECIPES: dict[str, Recipe] = {r.name: r for r in (
    Recipe("paper", "the paper's loss: every CE term and every KL term weighs 1; --epochs epochs"),
    Recipe("passes", f"the paper's loss; {_PASSES}", epochs="passes"),
    Recipe("teacher", f"the teacher's own path (k = L-1) gets half of the CE weight; {_PASSES}",
           teacher_share=0.5, epochs="passes"),
    Recipe("teacher-kl", f"as teacher, with the KL terms at half the weight; {_PASSES}",
           teacher_share=0.5, kl_weight=0.5, epochs="passes"),
    Recipe("hinton", f"as teacher-kl, distilling at temperature 2 (KL scaled by 4); {_PASSES}",
           teacher_share=0.5, kl_weight=0.5, temperature=2.0, epochs="passes"),
)}
# What `--objective geep` trains with when no recipe is named. Chosen with benchmarks/train_objectives.py (BENCHMARKS.md
# "Training recipes"): on tweets (3 seeds) its teacher keeps up with FastBERT's and its exits lead; `paper` trails.
DEFAULT_RECIPE = "teacher"


def geep_objective(recipe: str | None = None) -> Objective:
    """The geep objective under ``recipe`` (default :data:`DEFAULT_RECIPE`)."""
    name = DEFAULT_RECIPE if recipe is None else recipe
    if name not in RECIPES:
        raise GeepError(f"unknown recipe {name!r}; choose one of: {', '.join(RECIPES)}")
    r = RECIPES[name]
    stage = Stage("geep", r.loss(), trains=("backbone", "teacher", "students"), epochs=r.epochs, needs_diverse=True)
    return Objective("geep", (stage,), "one step: CE of the teacher on every layer's output through Layer_L + KL "
                     f"distillation of the students; recipe {r.name}: {r.description}", recipe=r)


_FINE_TUNE = Stage("fine-tune", teacher_loss, trains=("backbone", "teacher"))

OBJECTIVES: dict[str, Objective] = {
    "geep": geep_objective(),
    "cascade-da": Objective(
        "cascade-da",
        (_FINE_TUNE, Stage("difficulty-aware", difficulty_aware_loss, trains=("backbone", "teacher", "students"),
                           epochs="distil_epochs", needs_difficulty=True)),
        "CascadeBERT's member: fine-tune backbone + teacher; then mark each training row hard (answered wrongly) or "
        "easy, and train on cross entropy at every exit + 0.5 x a margin (0.3) ranking loss that makes easy rows "
        "more confident than hard ones at the teacher", tasks=("classification",),
    ),
    "fine-tune": Objective(
        "fine-tune", (_FINE_TUNE,),
        "ordinary fine-tuning of backbone + teacher (a static baseline, CascadeBERT's complete model); students, "
        "if any, stay untrained",
    ),
    "fastbert": Objective(
        "fastbert",
        (_FINE_TUNE, Stage("distil", student_distillation_loss, trains=("students",), epochs="distil_epochs")),
        "fine-tune backbone + teacher, then distil the students from the frozen teacher",
    ),
    "deebert": Objective(
        "deebert",
        (_FINE_TUNE, Stage("exits", student_cross_entropy_loss, trains=("students",), epochs="distil_epochs")),
        "fine-tune backbone + teacher, then train each frozen exit by cross entropy",
    ),
    "pabee": Objective(
        "pabee",
        (Stage("pabee", pabee_loss, trains=("backbone", "teacher", "students")),),
        "one step: cross entropy at every exit weighted by its depth",
    ),
    # BERxiT (Xin et al., EACL 2021, its "alternating" fine-tuning): odd steps the last layer's loss, even steps the
    # sum of every exit's, so the exits learn without the teacher losing what the plain fine-tuning gives it.
    "berxit": Objective(
        "berxit",
        (Stage("alternating", teacher_loss, trains=("backbone", "teacher", "students"), alternate=every_exit_loss),),
        "one step, alternating: the teacher's loss on odd steps, every exit's summed on even steps (BERxiT)",
    ),
    # Shallow-Deep Networks (Kaya et al., ICML 2019) and ensemble internal classifiers (Sun et al. 2021): their
    # losses, sources and what was verified are in geep/modeling/losses/sdn.py and ensemble.py.
    "sdn": Objective(
        "sdn", (Stage("sdn", sdn_loss, trains=("backbone", "teacher", "students"), schedule=sdn_schedule),),
        "one step: every exit's loss, exit k < L weighted by tau_k, grown linearly from 0.01 to k/L (SDN)",
    ),
    # HashEE (Sun et al., Findings of ACL 2022): the loss and what was checked are in geep/modeling/losses/hashee.py.
    "hashee": Objective(
        "hashee", (Stage("hashee", hashee_loss, trains=("backbone", "teacher"), halts_tokens=True),),
        "HashEE: every token halts after the layer a hash (--hash frequency or random) gives it, copied forward and "
        "still read as keys and values; the task's loss at the last layer (no internal classifiers; policy hashee)",
    ),
    "ensemble": Objective(
        "ensemble", (Stage("ensemble", ensemble_loss, trains=("backbone", "teacher", "students")),),
        "one step: every exit's cross entropy minus the exits' disagreement on the wrong classes (Sun et al.)",
        tasks=("classification",),
    ),
    # Learned halting (ACT, Graves 2016; PonderNet, Banino et al. 2021): geep/modeling/losses/ponder.py.
    "ponder": Objective(
        "ponder", (Stage("ponder", ponder_loss, trains=("backbone", "teacher", "students"), needs_signals=True),),
        "one step: a halting head per exit; each exit's cross entropy weighted by the halting distribution, plus "
        "0.01 x its KL divergence from a geometric prior (PonderNet); policy ponder",
        tasks=("classification",), exit_module="ponder",
    ),
}


def get_objective(name: str, recipe: str | None = None) -> Objective:
    """The objective registered under ``name``; for ``geep``, under ``recipe`` (None: the default recipe)."""
    if name not in OBJECTIVES:
        raise GeepError(f"unknown objective {name!r}; choose one of: {', '.join(OBJECTIVES)}")
    if name == "geep":
        return geep_objective(recipe)
    if recipe is not None:
        raise GeepError(f"a recipe ({recipe!r}) applies to the geep objective only, not {name!r}")
    return OBJECTIVES[name]
