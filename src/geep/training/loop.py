"""The training loop: one pass over an objective's stages, placed by ``accelerate``.

For each stage of the objective (``geep.objectives``): the parameter groups it names learn (``backbone`` at
``lr``, ``teacher`` and ``students`` at ``head_lr``), everything else is frozen; AdamW, linear warm-up then
linear decay, gradient clipping, a seeded shuffle, a progress bar. After every epoch the model is evaluated on
the dev data at every exit. Each stage keeps its best epoch by the mean dev accuracy of the exits whose heads it
trains (every exit for ``geep`` and ``pabee``; the teacher for a fine-tuning stage; the students for a
distillation stage), restores it at the stage's end, and the next stage starts from there. The per-exit dev
accuracy of what is kept at the end goes into ``model.config.dev_accuracy``.

Data goes in as :class:`EncodedData`: unpadded token ids (what ``model.tokenize`` returns) and the task's targets
(``geep.tasks``: class ids, multi-hot label sets or scores); the losses get them as the head learns them
(``Task.train_targets``: the standardised score for regression). "Dev accuracy" is the task's primary metric per exit
(accuracy, micro-F1 or Pearson). A model with an exit module also trains it at every step, on its own loss and with
its own gradient clipping (``learned_exit_loss``). Batches are padded per batch with ``geep.tokens.pad_batch``.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Sequence

import torch
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from geep.errors import GeepError
from geep.modeling.model import MultiExitClassifier
from geep.modeling.objectives import Stage, get_objective, learned_exit_loss
from geep.runtime.token_halting import check_halting, halting_forward
from geep.tokens import pad_batch
from geep.training.card import format_accuracy_table

logger = logging.getLogger(__name__)

HEAD_GROUPS = ("teacher", "students")
MAX_SEED = 2**32 - 1  # numpy's seeds (accelerate's set_seed seeds numpy too) are 0..2**32-1


@dataclass
class TrainingArguments:
    """Every knob of :func:`train`. ``distil_epochs`` is what a stage declared ``epochs="distil_epochs"`` runs."""

    epochs: int = 2
    distil_epochs: int = 1
    batch_size: int = 16
    eval_batch_size: int = 64
    lr: float = 5e-5  # the backbone's learning rate
    head_lr: float = 1e-3  # the exit heads' (freshly initialised heads need a much larger one)
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    seed: int = 42
    freeze_backbone: bool = False
    device: str | None = None  # "cpu", "cuda", or None: whatever accelerate picks
    show_progress_bar: bool = True

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 0, f"epochs must be >= 0, got {self.epochs}"),
            (self.distil_epochs >= 0, f"distil epochs must be >= 0, got {self.distil_epochs}"),
            (self.batch_size >= 1, f"batch size must be >= 1, got {self.batch_size}"),
            (self.eval_batch_size >= 1, f"eval batch size must be >= 1, got {self.eval_batch_size}"),
            (_positive(self.lr), f"lr must be a finite number above 0, got {self.lr}"),
            (_positive(self.head_lr), f"head lr must be a finite number above 0, got {self.head_lr}"),
            (isinstance(self.seed, int) and 0 <= self.seed <= MAX_SEED,
             f"seed must be an integer in 0..{MAX_SEED}, got {self.seed!r}"),
            (0 <= self.warmup_ratio < 1, f"warm-up ratio must lie in [0, 1), got {self.warmup_ratio}"),
            (self.max_grad_norm > 0, f"max grad norm must be > 0, got {self.max_grad_norm}"),
            (self.device in (None, "cpu", "cuda"), f"device must be cpu or cuda, got {self.device!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise GeepError(message)


def _positive(value: float) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


@dataclass
class EncodedData:
    """N rows ready for training: unpadded token ids (as ``model.tokenize`` returns) and the task's targets
    (``Task.targets``): class ids (N,) (a list of ints is read as those), multi-hot (N, C) or scores (N,)."""

    encoded: dict[str, list[list[int]]]
    labels: Tensor

    def __post_init__(self) -> None:
        if not isinstance(self.labels, Tensor):
            self.labels = torch.as_tensor(self.labels, dtype=torch.long)
        if len(self.encoded["input_ids"]) != len(self.labels):
            raise ValueError(f"{len(self.encoded['input_ids'])} rows of token ids but {len(self.labels)} labels")

    @classmethod
    def from_texts(cls, model: MultiExitClassifier, texts: Sequence[str], text_pairs: Sequence[str] | None,
                   label_ids: Sequence[int] | Tensor) -> "EncodedData":
        """Tokenises ``texts`` (and pairs) with the model's tokenizer; ``label_ids``: class ids or the task's
        targets (a tensor)."""
        labels = label_ids if isinstance(label_ids, Tensor) else torch.as_tensor(list(label_ids), dtype=torch.long)
        return cls(dict(model.tokenize(texts, text_pairs)), labels)

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class EpochRecord:
    stage: str
    epoch: int
    train_loss: float  # mean over the epoch's steps
    dev_accuracy: dict[str, float]  # {str(k): accuracy} for every exit k in E
    score: float  # mean dev accuracy over the exits the stage trains
    cpu_seconds: float = 0.0  # this process's CPU time since training started, at the end of this epoch


@dataclass
class TrainResult:
    dev_accuracy: dict[str, float]  # per exit, of the kept checkpoint
    history: list[EpochRecord] = field(default_factory=list)
    best_epochs: dict[str, int] = field(default_factory=dict)  # stage name -> kept epoch (1-based)
    skipped_stages: list[str] = field(default_factory=list)
    train_seconds: float = 0.0  # wall time
    train_cpu_seconds: float = 0.0  # this process's CPU time (all its threads): what sharing a machine disturbs less
    device: str = "cpu"
    mixed_precision: str = "no"

    def to_dict(self) -> dict:
        return asdict(self)


def stage_plan(model: MultiExitClassifier, stage: Stage, args: TrainingArguments) -> tuple[tuple[str, ...], int]:
    """(groups this stage trains, its epochs) after ``freeze_backbone``; no groups or 0 epochs means skipped.

    With ``freeze_backbone`` the backbone never learns; when the teacher came from a fine-tuned classifier
    (``config.teacher_head`` set), the teacher is frozen too, so only the exits learn.
    """
    frozen = set()
    if args.freeze_backbone:
        frozen.add("backbone")
        if model.config.teacher_head is not None:
            frozen.add("teacher")
    groups = tuple(g for g in stage.trains if g not in frozen
                   and not (g == "students" and len(model.exit_layers) == 1))  # one exit: no student to train
    epochs = {"epochs": args.epochs, "distil_epochs": args.distil_epochs,
              "passes": args.epochs + args.distil_epochs}[stage.epochs]
    return groups, epochs


def scored_exits(model: MultiExitClassifier, groups: Sequence[str]) -> list[int]:
    """The exits whose heads ``groups`` train: the teacher's for "teacher", the students' for "students"."""
    L = model.num_layers
    exits = [k for k in model.exit_layers if (k == L and "teacher" in groups) or (k < L and "students" in groups)]
    return exits or list(model.exit_layers)


@torch.inference_mode()
def evaluate(model: MultiExitClassifier, data: EncodedData, batch_size: int = 64,
             device: torch.device | str | None = None, halt_tokens: bool = False) -> dict[str, float]:
    """The task's primary metric (accuracy for classification) of every exit on ``data``, {str(k): score}, from
    one full forward per batch (``halt_tokens``: with tokens halting at their hashed layers, HashEE's forward)."""
    device = torch.device(device) if device is not None else model.device
    was_training = model.training
    model.eval()
    task = model.task
    outputs = []
    pad_id = model.pad_token_id
    for start in range(0, len(data), batch_size):
        rows = list(range(start, min(start + batch_size, len(data))))
        batch = pad_batch(data.encoded, rows, pad_id, device)
        forward = halting_forward if halt_tokens else MultiExitClassifier.__call__
        outputs.append(forward(model, batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
                       .exit_logits.float().cpu())  # (|E|, b, K)
    model.train(was_training)
    if not outputs:
        return {str(k): 0.0 for k in model.exit_layers}
    every = torch.cat(outputs, 1)  # (|E|, N, K)
    return {str(k): task.score(task.answer(every[i]).predictions, data.labels)
            for i, k in enumerate(model.exit_layers)}


@torch.inference_mode()
def hard_rows(model: MultiExitClassifier, data: EncodedData, batch_size: int = 64,
              device: torch.device | str | None = None) -> Tensor:
    """(N,) 1 for each row the teacher (exit L) answers wrongly, 0 for the others: CascadeBERT's difficulty."""
    device = torch.device(device) if device is not None else model.device
    was_training = model.training
    model.eval()
    wrong = torch.zeros(len(data), dtype=torch.long)
    for start in range(0, len(data), batch_size):
        rows = list(range(start, min(start + batch_size, len(data))))
        batch = pad_batch(data.encoded, rows, model.pad_token_id, device)
        logits = model(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids")).exit_logits[-1]
        wrong[rows] = (logits.argmax(-1).cpu() != data.labels[rows]).long()
    model.train(was_training)
    return wrong


def train(model: MultiExitClassifier, train_data: EncodedData, dev_data: EncodedData,
          args: TrainingArguments | None = None) -> TrainResult:
    """Trains ``model`` in place over its objective's stages (``model.config.objective``) and keeps the best.

    Returns the per-exit dev accuracy of the kept checkpoint (also stored in ``model.config.dev_accuracy``),
    the per-epoch history and the wall time. The model ends on the CPU in eval mode. A loss that turns NaN or
    infinite stops training with a GeepError at that step (``geep train`` then writes nothing); the model's weights
    are then those the diverging steps left, so reload it rather than use it.
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from transformers import get_linear_schedule_with_warmup

    args = args or TrainingArguments()
    if len(train_data) == 0:
        raise GeepError("the training data has no rows")
    if len(dev_data) == 0:
        raise GeepError("the dev data has no rows")
    objective = get_objective(model.config.objective, model.config.recipe)
    if objective.recipe is not None:
        model.config.recipe = objective.recipe.name  # the saved model says which recipe trained it
    plans = [(stage, *stage_plan(model, stage, args)) for stage in objective.stages]
    task = model.task
    objective.check_task(task.name)
    metric = task.primary.replace("_", "-")
    if not any(groups and epochs for _, groups, epochs in plans):
        raise GeepError(f"nothing to train: every stage of {objective.name!r} is frozen or has 0 epochs")
    if any(stage.halts_tokens for stage in objective.stages):
        check_halting(model)  # a token hash (set_token_hash) and a family whose tokens can halt

    if objective.exit_module is not None and model.config.exit_module != objective.exit_module:
        raise GeepError(f"the {objective.name} objective trains the model's {objective.exit_module} exit module, and "
                        f"this model has {model.config.exit_module or 'none'}; build it with "
                        f"exit_module={objective.exit_module!r} (`geep train --objective {objective.name}` does)")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise GeepError("--device cuda, but torch sees no CUDA device")
    use_cuda = args.device != "cpu" and torch.cuda.is_available()
    mixed_precision = "bf16" if use_cuda and torch.cuda.is_bf16_supported() else "no"
    accelerator = Accelerator(cpu=not use_cuda, mixed_precision=mixed_precision)
    set_seed(args.seed)
    logger.info("training %s%s for %s on %d rows (dev %d) on %s, mixed precision %s", objective.name,
                f" (recipe {objective.recipe.name})" if objective.recipe else "", task.name, len(train_data),
                len(dev_data), accelerator.device, mixed_precision)

    pad_id = model.pad_token_id
    difficulty = torch.zeros(len(train_data), dtype=torch.long)  # filled before a stage that needs it
    loader = DataLoader(
        range(len(train_data)), batch_size=args.batch_size, shuffle=True,
        generator=torch.Generator().manual_seed(args.seed),
        collate_fn=lambda rows: {**pad_batch(train_data.encoded, rows, pad_id, torch.device("cpu")),
                                 "labels": train_data.labels[list(rows)], "difficulty": difficulty[list(rows)]},
    )
    loader = accelerator.prepare_data_loader(loader)
    model.to(accelerator.device)
    result = TrainResult(dev_accuracy={}, device=str(accelerator.device), mixed_precision=mixed_precision)
    groups_of = model.parameter_groups()
    groups_of.setdefault("exit_module", [])
    started, cpu_started = time.perf_counter(), time.process_time()

    for stage, groups, epochs in plans:
        if not groups or not epochs:
            why = "0 epochs" if groups else "nothing left to train (frozen by --freeze-backbone, or no student exits)"
            logger.info("stage %s: skipped (%s)", stage.name, why)
            result.skipped_stages.append(stage.name)
            continue
        for p in model.parameters():
            p.requires_grad_(False)
        for g in groups:
            for p in groups_of[g]:
                p.requires_grad_(True)
        for p in groups_of["exit_module"]:  # an exit module learns in every stage, on its own loss
            p.requires_grad_(True)
        param_groups = [
            {"params": groups_of["backbone"], "lr": args.lr} if "backbone" in groups else None,
            {"params": [p for g in HEAD_GROUPS if g in groups for p in groups_of[g]], "lr": args.head_lr},
            {"params": groups_of["exit_module"], "lr": args.head_lr},
        ]
        param_groups = [pg for pg in param_groups if pg and pg["params"]]
        trainable = [p for pg in param_groups for p in pg["params"] if all(p is not q for q in groups_of["exit_module"])]
        optimizer = torch.optim.AdamW(param_groups, weight_decay=args.weight_decay)
        total_steps = len(loader) * epochs
        scheduler = get_linear_schedule_with_warmup(optimizer, int(args.warmup_ratio * total_steps), total_steps)
        if stage.needs_difficulty:  # CascadeBERT: hard = answered wrongly by the model as the stage begins
            difficulty[:] = hard_rows(model, train_data, args.eval_batch_size, accelerator.device)
            logger.info("stage %s: %d of %d training rows are hard (answered wrongly at the teacher)", stage.name,
                        int(difficulty.sum()), len(difficulty))
        wrapped, optimizer = accelerator.prepare(model, optimizer)
        exits = scored_exits(model, groups)
        logger.info("stage %s: trains %s for %d epoch(s), %d steps; kept epoch chosen by mean dev %s "
                    "of exits %s", stage.name, "+".join(groups + (("exit_module",) if groups_of["exit_module"] else ())),
                    epochs, total_steps, metric, exits)

        best_score, best_state, best_acc, best_epoch = -1.0, None, {}, 0
        for epoch in range(1, epochs + 1):
            wrapped.train()
            losses = []
            bar = tqdm(loader, desc=f"{stage.name} epoch {epoch}/{epochs}", leave=False,
                       disable=not args.show_progress_bar or not accelerator.is_local_main_process)
            for step, batch in enumerate(bar, 1):
                if stage.halts_tokens:  # HashEE: tokens halt at their hashed layers, through the model's own modules
                    with accelerator.autocast():
                        out = halting_forward(model, batch["input_ids"], batch["attention_mask"],
                                              batch.get("token_type_ids"))
                else:
                    out = wrapped(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"),
                                  diverse=stage.needs_diverse)
                diverse = None if out.diverse_logits is None else out.diverse_logits.float()
                targets = task.train_targets(batch["labels"])
                extra = {"difficulty": batch["difficulty"]} if stage.needs_difficulty else {}
                if stage.needs_signals:  # learned halting: the stage's loss trains the halting heads itself
                    extra["exit_signals"] = out.exit_signals.float()
                stage_step = (epoch - 1) * len(loader) + step  # counted over the stage, not restarted each epoch
                loss = stage.loss_at(stage_step, stage_step / total_steps)(
                    out.exit_logits.float(), diverse, targets, model.exit_layers, task=task, **extra)
                if out.exit_signals is not None and not stage.needs_signals:  # its input is detached: this term
                    # trains the exit module alone
                    loss = loss + learned_exit_loss(out.exit_signals.float(), out.exit_logits.float(), targets,
                                                    task=task)
                value = loss.item()
                if not math.isfinite(value):
                    bar.close()
                    raise GeepError(f"the training loss became {value} at stage {stage.name}, epoch {epoch}, step "
                                    f"{step}; training stopped (learning rates too large? lr {args.lr:g}, head lr "
                                    f"{args.head_lr:g})")
                accelerator.backward(loss)
                accelerator.clip_grad_norm_(trainable, args.max_grad_norm)
                if groups_of["exit_module"]:  # clipped on its own: its gradients leave the others' norm alone
                    accelerator.clip_grad_norm_(groups_of["exit_module"], args.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                losses.append(value)
                bar.set_postfix(step=step, loss=f"{value:.4f}")
            bar.close()
            acc = evaluate(model, dev_data, args.eval_batch_size, accelerator.device, halt_tokens=stage.halts_tokens)
            score = sum(acc[str(k)] for k in exits) / len(exits)
            train_loss = sum(losses) / max(len(losses), 1)
            result.history.append(EpochRecord(stage.name, epoch, train_loss, acc, score,
                                              time.process_time() - cpu_started))
            logger.info("stage %s epoch %d/%d: train loss %.4f, mean dev %s %.4f\n%s", stage.name, epoch,
                        epochs, train_loss, metric, score, format_accuracy_table(acc, metric=metric))
            if score > best_score:
                best_score, best_acc, best_epoch = score, acc, epoch
                best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        if best_epoch != epochs:
            logger.info("stage %s: keeping epoch %d (mean dev %s %.4f)", stage.name, best_epoch, metric, best_score)
            model.load_state_dict(best_state)
        result.best_epochs[stage.name] = best_epoch
        result.dev_accuracy = best_acc
        del best_state, optimizer, wrapped
        accelerator.free_memory()

    for p in model.parameters():
        p.requires_grad_(True)
    result.train_seconds = time.perf_counter() - started
    result.train_cpu_seconds = time.process_time() - cpu_started
    model.to("cpu").eval()
    model.config.dev_accuracy = dict(result.dev_accuracy)
    return result


def describe_plan(model: MultiExitClassifier, args: TrainingArguments) -> list[dict]:
    """What each stage will do, for training_args.json: name, groups, epochs, skipped."""
    out = []
    for stage in get_objective(model.config.objective, model.config.recipe).stages:
        groups, epochs = stage_plan(model, stage, args)
        out.append({"stage": stage.name, "trains": list(groups), "epochs": epochs,
                    "skipped": not (groups and epochs), "diverse": stage.needs_diverse})
    return out


__all__ = ["EncodedData", "EpochRecord", "TrainResult", "TrainingArguments", "describe_plan", "evaluate",
           "stage_plan", "train"]
