"""Runs a multi-exit model over texts: tokenising, length-sorted batching, exit policies, outputs in input order.

Every policy is fed the same batches (rows sorted by token length, then cut into batches of ``batch_size``), so
comparisons between policies measure the exit mechanism, not the padding.

The layer loop of one batch (:func:`run_batch`): run the layers up to the next exit k of E, run exit k's head on
the rows still in the batch, ask the policy which rows leave; those record their probabilities and exit layer
and leave the state through ``model.select_rows`` (hidden states, padding mask, row ids and the policy's
per-row memory are indexed together, and padding no survivor needs is trimmed). One host sync per exit decides
whether any row leaves. Every layer and head call is added to a :class:`geep.flops.FlopsCount`.

The pieces (:func:`pad_batch`, :func:`embed_rows`, :func:`advance`, :func:`read_exit`, :func:`keep_rows`,
:class:`Outputs`) are what other schedules (e.g. buckets run to a predicted layer) build on. A policy with its
own schedule defines ``run(model, encoded, knob, *, batch_size, labels, order, show_progress) -> PolicyRun``, and
:func:`run_policy` hands it the tokenised rows instead of running the layer loop.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, NamedTuple, Sequence

import torch
from torch import Tensor

from geep.backbone import State
from geep.errors import GeepError
from geep.flops import FlopsCount, FlopsSpec
from geep.policies import Memory, Policy, get_policy, select_memory

if TYPE_CHECKING:
    from geep.model import MultiExitClassifier, PredictionOutput

logger = logging.getLogger(__name__)

Encoded = dict  # {"input_ids": list[list[int]], optionally "token_type_ids": list[list[int]]} (model.tokenize)


# ------------------------------------------------------------------------------------------------ batching
def length_order(lengths: Sequence[int]) -> list[int]:
    """Row indices sorted by length (stable, so equal lengths keep input order)."""
    return sorted(range(len(lengths)), key=lambda i: lengths[i])


def batches(order: Sequence[int], batch_size: int) -> list[list[int]]:
    """``order`` cut into consecutive batches of at most ``batch_size`` rows."""
    if batch_size < 1:
        raise GeepError(f"batch size must be at least 1, got {batch_size}")
    return [list(order[i:i + batch_size]) for i in range(0, len(order), batch_size)]


def token_lengths(encoded: Encoded) -> list[int]:
    """Each row's number of tokens."""
    return [len(x) for x in encoded["input_ids"]]


def pad_batch(encoded: Encoded, rows: Sequence[int], pad_id: int, device: torch.device | str) -> dict[str, Tensor]:
    """input_ids, attention_mask (and token_type_ids) (B, T) for ``rows``, right padded to their longest."""
    ids = [encoded["input_ids"][i] for i in rows]
    T = max(len(x) for x in ids)
    has_types = encoded.get("token_type_ids") is not None
    out = {
        "input_ids": torch.full((len(ids), T), pad_id, dtype=torch.long),
        "attention_mask": torch.zeros((len(ids), T), dtype=torch.long),
    }
    if has_types:
        out["token_type_ids"] = torch.zeros((len(ids), T), dtype=torch.long)
    for r, i in enumerate(rows):
        n = len(encoded["input_ids"][i])
        out["input_ids"][r, :n] = torch.tensor(encoded["input_ids"][i])
        out["attention_mask"][r, :n] = 1
        if has_types:
            out["token_type_ids"][r, :n] = torch.tensor(encoded["token_type_ids"][i])
    return {k: v.to(device) for k, v in out.items()}


def pad_id_of(model: "MultiExitClassifier") -> int:
    tokenizer = model.tokenizer
    pad = None if tokenizer is None else tokenizer.pad_token_id
    return 0 if pad is None else int(pad)


# -------------------------------------------------------------------------------------------- stepping
def embed_rows(model: "MultiExitClassifier", encoded: Encoded, rows: Sequence[int]) -> State:
    """h_0 of ``rows`` as one padded batch; the state's row_ids are the rows' input indices."""
    device = model.device
    batch = pad_batch(encoded, rows, pad_id_of(model), device)
    row_ids = torch.tensor(list(rows), dtype=torch.long, device=device)
    return model.backbone.embed(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"), row_ids)


def advance(model: "MultiExitClassifier", state: State, to_layer: int, flops: FlopsCount | None = None) -> State:
    """Runs layers state.layer+1 .. to_layer on every row of ``state``, counting each call."""
    if flops is not None:
        flops.add_layers(state.layer, to_layer, state.batch_size, state.seq_len)
    return model.run_layers(state, to_layer)


def read_exit(model: "MultiExitClassifier", state: State, flops: FlopsCount | None = None) -> Tensor:
    """Logits (B, C) of the head at the state's layer, run on the rows of ``state`` only, counted."""
    if flops is not None:
        flops.add_head(state.layer, state.batch_size, state.seq_len)
    return model.exit_logits(state)


def keep_rows(model: "MultiExitClassifier", state: State, memory: Memory, keep: Tensor) -> tuple[State, Memory]:
    """The state and policy memory of the rows in ``keep`` (long indices into the batch), indexed together."""
    return model.select_rows(state, keep), select_memory(memory, keep)


class Outputs:
    """Probabilities (N, C) and exit layers (N,) filled row by row, kept on the model's device until the end."""

    def __init__(self, n: int, num_labels: int, device: torch.device) -> None:
        self.probabilities = torch.zeros((n, num_labels), device=device)
        self.exit_layers = torch.zeros((n,), dtype=torch.long, device=device)

    def record(self, row_ids: Tensor, logits: Tensor, layer: int) -> None:
        """Rows ``row_ids`` (input indices) exit at ``layer`` with these logits (B', C)."""
        self.probabilities[row_ids] = logits.float().softmax(-1)
        self.exit_layers[row_ids] = layer


# ---------------------------------------------------------------------------------------------- policies
def run_batch(model: "MultiExitClassifier", state: State, policy: Policy, knob: float | None, memory: Memory,
              outputs: Outputs, flops: FlopsCount | None = None) -> None:
    """Runs one batch (a state at h_0) to the end under ``policy``; every row records where it exits."""
    L = model.num_layers
    exits = model.exit_layers if policy.reads_exits else [L]
    for k in exits:
        state = advance(model, state, k, flops)
        logits = read_exit(model, state, flops)  # (B, C), only the rows still running
        if k == L:
            outputs.record(state.row_ids, logits, k)
            return
        leave, memory = policy.decide(logits, knob, memory)  # (B,) bool, no host sync
        leaving = leave.nonzero().squeeze(1)  # the one host sync of this exit
        if leaving.numel() == 0:
            continue
        outputs.record(state.row_ids.index_select(0, leaving), logits.index_select(0, leaving), k)
        if leaving.numel() == state.batch_size:
            return
        state, memory = keep_rows(model, state, memory, (~leave).nonzero().squeeze(1))


class PolicyRun(NamedTuple):
    """probabilities (N, C) and exit_layers (N,) on the CPU in input order; flops: the count of what ran."""

    probabilities: Tensor
    exit_layers: Tensor
    flops: FlopsCount


def resolve_knob(model: "MultiExitClassifier", policy: Policy, knob: float | None) -> float | None:
    """``knob`` checked, or the model's calibrated default for the policy, else the policy's own default."""
    if knob is None:
        knob = model.config.default_knobs.get(policy.name)
    return policy.resolve_knob(knob, model.config.num_labels, len(model.exit_layers))


def label_ids(model: "MultiExitClassifier", labels: Sequence[int | str] | Tensor) -> Tensor:
    """Labels as class ids (N,): a tensor or ints pass through, names map through ``model.label_names``."""
    if isinstance(labels, Tensor):
        return labels.long()
    index = {name: i for i, name in enumerate(model.label_names)}
    out = []
    for label in labels:
        if isinstance(label, str):
            if label not in index:
                raise GeepError(f"label {label!r} is not one of the model's labels: {', '.join(model.label_names)}")
            out.append(index[label])
        else:
            out.append(int(label))
    return torch.tensor(out, dtype=torch.long)


@torch.inference_mode()
def run_policy(model: "MultiExitClassifier", encoded: Encoded, policy: str | Policy = "full",
               knob: float | None = None, *, batch_size: int = 32, order: Sequence[int] | None = None,
               labels: Sequence[int | str] | Tensor | None = None, show_progress: bool = False) -> PolicyRun:
    """Runs ``policy`` over already tokenised rows (see ``model.tokenize``) in batches of ``order``.

    ``order`` defaults to :func:`length_order` of the token lengths; ``knob`` goes through :func:`resolve_knob`
    (None: the model's default for the policy); ``labels`` (N,) names or class ids, for policies that need them.
    """
    policy = get_policy(policy)
    knob = resolve_knob(model, policy, knob)
    n = len(encoded["input_ids"])
    if labels is not None:
        labels = label_ids(model, labels)
    if order is not None and sorted(order) != list(range(n)):
        raise ValueError(f"order must list each of the {n} rows once")
    custom = getattr(policy, "run", None)  # a policy with its own schedule (e.g. geep's sorted buckets)
    if custom is not None:
        return custom(model, encoded, knob, batch_size=batch_size, labels=labels, order=order,
                      show_progress=show_progress)
    if policy.needs_labels and labels is None:
        raise GeepError(f"the {policy.name} policy needs the true labels (a label column)")
    if labels is not None and len(labels) != n:
        raise GeepError(f"{len(labels)} labels for {n} rows")
    model.eval()
    device = model.device
    outputs = Outputs(n, model.config.num_labels, device)
    flops = FlopsCount(FlopsSpec.from_model(model))
    if order is None:
        order = length_order(token_lengths(encoded))
    labels_dev = None if labels is None else labels.to(device)
    bar = progress_bar(n, show_progress)
    try:
        for rows in batches(order, batch_size):
            state = embed_rows(model, encoded, rows)
            memory = policy.start(len(rows), device, None if labels_dev is None else labels_dev[state.row_ids])
            run_batch(model, state, policy, knob, memory, outputs, flops)
            bar.update(len(rows))
    finally:
        bar.close()
    return PolicyRun(outputs.probabilities.cpu(), outputs.exit_layers.cpu(), flops)


class ExitLogits(NamedTuple):
    """logits (N, |E|, C) of every exit in the order of E, and token lengths (N,), both in input order."""

    logits: Tensor
    lengths: Tensor


@torch.inference_mode()
def all_exit_logits(model: "MultiExitClassifier", encoded: Encoded | Sequence[str],
                    text_pairs: Sequence[str] | None = None, *, batch_size: int = 32,
                    show_progress: bool = False) -> ExitLogits:
    """Every exit's logits for every row in one pass (no row leaves), for calibration and policy replay.

    ``encoded`` is the output of ``model.tokenize`` or a list of texts (then tokenised here).
    """
    if not isinstance(encoded, dict) and not hasattr(encoded, "keys"):
        encoded = model.tokenize(list(encoded), None if text_pairs is None else list(text_pairs))
    model.eval()
    lengths = token_lengths(encoded)
    n, E, C = len(lengths), len(model.exit_layers), model.config.num_labels
    logits = torch.zeros((n, E, C), device=model.device)
    bar = progress_bar(n, show_progress)
    try:
        for rows in batches(length_order(lengths), batch_size):
            state = embed_rows(model, encoded, rows)
            for i, k in enumerate(model.exit_layers):
                state = model.run_layers(state, k)
                logits[state.row_ids, i] = model.exit_logits(state).float()
            bar.update(len(rows))
    finally:
        bar.close()
    return ExitLogits(logits.cpu(), torch.tensor(lengths, dtype=torch.long))


def progress_bar(total: int, show: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not show, unit="row", desc="predict", leave=False)


# ---------------------------------------------------------------------------------------------- predict
def resolve_device(device: str | torch.device | None) -> torch.device | None:
    """A torch device for ``device`` (None stays None); GeepError when CUDA is asked for but absent."""
    if device is None:
        return None
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise GeepError(f"unknown device {device!r}; use cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise GeepError(f"device {device} asked for, but CUDA is not available (torch {torch.__version__})")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise GeepError(f"device {device} asked for, but there are {torch.cuda.device_count()} CUDA devices")
    return device


def predict(model: "MultiExitClassifier", texts: str | Sequence[str], text_pairs: str | Sequence[str] | None = None,
            *, policy: str | Policy = "full", knob: float | None = None, batch_size: int = 32,
            labels: Sequence[int | str] | Tensor | None = None, show_progress: bool = False,
            device: str | torch.device | None = None) -> "PredictionOutput":
    """Labels, probabilities and exit layers of ``texts`` (a string or a list) under an exit policy.

    ``knob`` None takes ``model.config.default_knobs[policy]``, else the policy's documented default. ``labels``
    (names or class ids) are needed by ``oracle`` only. ``device`` moves the model there first.
    """
    from geep.model import PredictionOutput

    policy = get_policy(policy)
    knob = resolve_knob(model, policy, knob)
    if isinstance(texts, str):
        texts = [texts]
    if isinstance(text_pairs, str):
        text_pairs = [text_pairs]
    texts = list(texts)
    if text_pairs is not None and len(text_pairs) != len(texts):
        raise GeepError(f"{len(text_pairs)} text pairs for {len(texts)} texts")
    ids = None if labels is None else label_ids(model, labels)
    if policy.needs_labels and ids is None:
        raise GeepError(f"the {policy.name} policy needs the true labels (a label column)")
    target = resolve_device(device)
    if target is not None:
        model.to(target)
    if not texts:
        C = model.config.num_labels
        empty = torch.zeros((0,), dtype=torch.long)
        return PredictionOutput([], empty, torch.zeros((0, C)), empty.clone())
    encoded = model.tokenize(texts, None if text_pairs is None else list(text_pairs))
    run = run_policy(model, encoded, policy, knob, batch_size=batch_size, labels=ids, show_progress=show_progress)
    label_idx = run.probabilities.argmax(-1)
    names = [model.label_names[i] for i in label_idx.tolist()]
    logger.debug("%s: %d rows, %.3g FLOPs", policy.name, len(texts), run.flops.total)
    return PredictionOutput(names, label_idx, run.probabilities, run.exit_layers)
