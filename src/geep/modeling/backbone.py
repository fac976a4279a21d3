"""Runs a Hugging Face encoder layer by layer, whatever its family.

Notation: h_0 is the embeddings' output (in the hidden size) and h_k = Layer_k(h_{k-1}) for k = 1..L. The encoder's
own modules do all the work, called as the family's own forward calls them: an adapter per family
(``geep.modeling.families``, chosen from the model's config) says how to embed, what each layer takes besides h
(masks made by transformers' own functions, a position bias, relative embeddings, rotary tables) and what an exit
reads (``output``: the final norm of a pre-norm family). Nothing here or there copies or patches model code, and
nothing above this module knows the family.

A :class:`State` is a batch in flight: the hidden states h_k of the rows still running, their padding mask, the
per-row extras the family made at embedding time, the layers' other inputs, and the row ids that say which input
row each one is. Rows leave a state only through :func:`Backbone.select_rows` (or are pooled by
:func:`Backbone.gather_rows`), which index every per-row tensor together and rebuild the layers' inputs, so no row
ever attends with another row's mask or position bias.

When a model is wrapped, :meth:`Backbone.check_parity` runs it both ways on a short padded batch: a model that
stepping does not reproduce is refused in one line.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import PreTrainedModel

from geep.errors import GeepError
from geep.modeling.families import Family, LayerShape, family_for, supported

PARITY_TOLERANCE = 1e-5  # largest |stepped - forward| over real tokens, fp32


@dataclass
class State:
    """Rows of a batch after ``layer`` layers.

    hidden: (B, T, H) = h_layer of each row; attention_mask: (B, T) 1 for real tokens, 0 for padding (right
    padded); mask: what the layers take besides h, made from ``attention_mask`` and ``extras`` by the family's
    adapter (for BERT-shaped models transformers' attention mask, None when nothing is padded); row_ids: (B,) each
    row's index in the caller's batch; layer: layers run so far; extras: per-row tensors (batch first) the family
    made at embedding time, e.g. MPNet's position bias (B, nh, T, T), moved with their rows; token_layers: (B, T)
    the layer each token halts after (HashEE's hash: it runs layers 1..l and is copied forward; 0 at padding), or
    None when every token runs every layer. A state with token layers runs on ``geep.runtime``'s token-halting step
    (``geep.runtime.token_halting``), never on :meth:`Backbone.run_layers`.
    """

    hidden: Tensor
    attention_mask: Tensor
    mask: Any
    row_ids: Tensor
    layer: int
    extras: dict[str, Tensor] = field(default_factory=dict)
    token_layers: Tensor | None = None

    @property
    def batch_size(self) -> int:
        return self.hidden.shape[0]

    @property
    def seq_len(self) -> int:
        return self.hidden.shape[1]


class Backbone(nn.Module):
    """A Hugging Face encoder stepped one layer at a time through its family's adapter."""

    def __init__(self, encoder: PreTrainedModel) -> None:
        super().__init__()
        config = getattr(encoder, "config", None)
        if config is None:
            raise GeepError(f"{type(encoder).__name__} is not a Hugging Face model; geep steps these encoder "
                            f"families: {supported()}")
        family = family_for(config)
        try:
            family.check_structure(encoder)
        except GeepError as e:
            raise GeepError(f"{e}; geep steps these encoder families: {supported()}") from None
        family.drop_unused(encoder)
        self.encoder = encoder
        self.family: Family = family  # stateless: every call passes the encoder

    @property
    def config(self):
        return self.encoder.config

    @property
    def layers(self) -> nn.ModuleList:
        """The distinct modules holding the layers' weights (what int8 quantises)."""
        return self.family.layers(self.encoder)

    @property
    def num_layers(self) -> int:
        return self.family.num_layers(self.encoder)

    @property
    def max_positions(self) -> int | None:
        """Tokens a row may have (:func:`max_positions`)."""
        return max_positions(self.encoder)

    def layer_shapes(self) -> list[LayerShape]:
        """The sizes of each layer's matrix products, k = 1..L (what ``geep.runtime.flops`` counts)."""
        return self.family.layer_shapes(self.config)

    def classifier_head(self, num_labels: int) -> nn.Module:
        """A fresh ``classifier`` head: the family's own sequence-classification head."""
        return self.family.classifier_head(self.config, num_labels)

    # ------------------------------------------------------------------------------------------------ stepping
    def inputs_for(self, hidden: Tensor, attention_mask: Tensor, extras: dict[str, Tensor] | None = None) -> Any:
        """What the layers take besides h for rows (B, T, H) with padding mask (B, T) (extras made afresh when
        not given)."""
        if extras is None:
            extras = self.family.extras(self.encoder, hidden, attention_mask)
        return self.family.inputs(self.encoder, hidden, attention_mask, extras)

    def attention_mask_for(self, hidden: Tensor, attention_mask: Tensor) -> Any:
        """The layers' inputs for fresh rows: for a BERT-shaped model, transformers' mask for its attention
        implementation."""
        return self.inputs_for(hidden, attention_mask)

    def state(self, hidden: Tensor, attention_mask: Tensor, row_ids: Tensor, layer: int,
              extras: dict[str, Tensor], token_layers: Tensor | None = None) -> State:
        """A state of these rows with the layers' inputs built for them."""
        return State(hidden, attention_mask, self.inputs_for(hidden, attention_mask, extras), row_ids, layer, extras,
                     token_layers)

    def embed(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        token_type_ids: Tensor | None = None,
        row_ids: Tensor | None = None,
    ) -> State:
        """h_0 for a batch of token ids (B, T)."""
        hidden = self.family.embed(self.encoder, input_ids, attention_mask, token_type_ids)  # (B, T, H)
        if row_ids is None:
            row_ids = torch.arange(input_ids.shape[0], device=input_ids.device)
        extras = self.family.extras(self.encoder, hidden, attention_mask)
        return self.state(hidden, attention_mask, row_ids, 0, extras)

    def layer(self, k: int, hidden: Tensor, mask: Any) -> Tensor:
        """Layer_k (1-based) on hidden states (B, T, H) with the inputs from :meth:`inputs_for`."""
        return self.family.layer(self.encoder, k, hidden, mask)

    def output(self, hidden: Tensor) -> Tensor:
        """What an exit reads from h_k (B, T, H): h_k, or the final norm of a pre-norm family."""
        return self.family.output(self.encoder, hidden)

    def run_layers(self, state: State, to_layer: int) -> State:
        """Runs layers ``state.layer + 1 .. to_layer`` and returns the state at h_{to_layer}."""
        if not state.layer <= to_layer <= self.num_layers:
            raise ValueError(f"cannot run from layer {state.layer} to {to_layer} (L = {self.num_layers})")
        if state.token_layers is not None:
            raise ValueError("a state whose tokens halt runs on geep.runtime.token_halting, not every token here")
        hidden = state.hidden
        for k in range(state.layer + 1, to_layer + 1):
            hidden = self.layer(k, hidden, state.mask)
        return State(hidden, state.attention_mask, state.mask, state.row_ids, to_layer, state.extras)

    def select_rows(self, state: State, keep: Tensor, trim: bool = True) -> State:
        """The state of the rows picked by ``keep`` ((B,) bool mask or long indices).

        Every per-row tensor (hidden states, padding mask, row ids, the family's extras) is indexed together and
        the layers' inputs are rebuilt from the kept rows. With ``trim``, columns that are padding for every kept
        row are dropped (rows are right padded), so the survivors run at their own longest length.
        """
        if keep.dtype == torch.bool:
            keep = keep.nonzero().squeeze(1)
        hidden = state.hidden.index_select(0, keep)  # (B', T, H)
        attention_mask = state.attention_mask.index_select(0, keep)  # (B', T)
        extras = {name: t.index_select(0, keep) for name, t in state.extras.items()}
        token_layers = None if state.token_layers is None else state.token_layers.index_select(0, keep)  # (B', T)
        if trim and hidden.shape[0] > 0:
            length = int(attention_mask.sum(1).max())
            hidden, attention_mask = hidden[:, :length], attention_mask[:, :length]
            extras = {name: _resize(t, self.family.extra_dims[name], length) for name, t in extras.items()}
            token_layers = None if token_layers is None else token_layers[:, :length]
        return self.state(hidden, attention_mask, state.row_ids.index_select(0, keep), state.layer, extras,
                          token_layers)

    def gather_rows(self, parts: Sequence[tuple[State, Tensor]], order: Tensor) -> State:
        """The rows ``keep`` of every ``(state, keep)`` part (states at the same layer), padded to the longest part
        and concatenated, then put in ``order`` (positions into the concatenation) and trimmed: rows of different
        batches pooled into one, each with its own extras."""
        T = max(state.seq_len for state, _ in parts)
        halting = {state.token_layers is not None for state, _ in parts}
        if len(halting) > 1:
            raise ValueError("cannot pool rows whose tokens halt with rows whose tokens do not")
        hidden, mask, ids, extras, token_layers = [], [], [], {}, []
        for state, keep in parts:
            keep = keep.to(state.hidden.device)
            pad = T - state.seq_len
            hidden.append(F.pad(state.hidden.index_select(0, keep), (0, 0, 0, pad)))  # (b, T, H)
            mask.append(F.pad(state.attention_mask.index_select(0, keep), (0, pad)))  # (b, T)
            ids.append(state.row_ids.index_select(0, keep))
            if state.token_layers is not None:
                token_layers.append(F.pad(state.token_layers.index_select(0, keep), (0, pad)))  # (b, T), 0: padding
            for name, t in state.extras.items():
                extras.setdefault(name, []).append(_resize(t.index_select(0, keep), self.family.extra_dims[name], T))
        layer = parts[0][0].layer
        pooled = State(torch.cat(hidden), torch.cat(mask), None, torch.cat(ids), layer,
                       {name: torch.cat(ts) for name, ts in extras.items()},
                       torch.cat(token_layers) if token_layers else None)
        return self.select_rows(pooled, order.to(pooled.hidden.device))

    # ------------------------------------------------------------------------------------------------ parity
    def parity_batch(self) -> dict[str, Tensor]:
        """The parity check's batch for this model (:func:`parity_batch`)."""
        return parity_batch(self.encoder)

    def check_parity(self, batch: dict[str, Tensor] | None = None) -> float:
        """Runs the model's own forward and the layers one by one on a short padded batch and returns the largest
        difference of ``last_hidden_state`` over real tokens; a GeepError (one line) when it exceeds
        PARITY_TOLERANCE: geep never runs a model stepping does not reproduce."""
        batch = self.parity_batch() if batch is None else batch
        family, config = self.family, self.config
        name = f"{family.title} adapter on a {getattr(config, 'model_type', '?')} model"
        try:
            with evaluating(self), torch.no_grad():
                reference = self.encoder(**family.forward_kwargs(**batch)).last_hidden_state  # (2, T, H)
                stepped = self.output(self.run_layers(self.embed(**batch), self.num_layers).hidden)
        except Exception as e:  # a layer whose signature moved in this transformers release: refuse, in one line
            why = (str(e).strip().splitlines() or [""])[0]
            raise GeepError(f"geep cannot step this model: the {name} failed ({type(e).__name__}: {why}); "
                            f"it steps these encoder families: {supported()}") from None
        real = batch["attention_mask"].bool()
        if stepped.shape != reference.shape:
            diff = float("inf")
        else:
            diff = float((stepped[real].float() - reference[real].float()).abs().max())
        if not diff <= PARITY_TOLERANCE:
            raise GeepError(f"geep refuses this model: stepped layer by layer, the {name} does not reproduce its "
                            f"own forward (largest difference {diff:.1e} > {PARITY_TOLERANCE:.0e}); it steps these "
                            f"encoder families: {supported()}")
        return diff


def parity_batch(encoder: PreTrainedModel) -> dict[str, Tensor]:
    """A short padded batch for the parity check of ``encoder``: 2 rows of random ids (fixed seed), the second
    half padding, as long as the family needs (``Family.parity_length``) and the model allows."""
    config = encoder.config
    T = family_for(config).parity_length(config)
    positions = max_positions(encoder)
    if positions is not None:
        T = max(2, min(T, positions))
    vocab = config.vocab_size
    ids = torch.randint(min(5, vocab - 1), vocab, (2, T), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(2, T, dtype=torch.long)
    mask[1, max(1, T // 2):] = 0
    pad = config.pad_token_id if isinstance(config.pad_token_id, int) and 0 <= config.pad_token_id < vocab else 0
    ids[1][mask[1] == 0] = pad
    device = next(encoder.parameters()).device
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device),
            "token_type_ids": torch.zeros_like(ids).to(device)}


@contextmanager
def evaluating(module: nn.Module) -> Iterator[nn.Module]:
    """``module`` in eval mode (no dropout) for the block; every submodule's own mode is restored after."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, training in modes:
            m.training = training


def _resize(t: Tensor, dims: tuple[int, ...], length: int) -> Tensor:
    """``t`` cut or zero-padded to ``length`` along each of its token dimensions ``dims`` (right padding)."""
    for d in dims:
        n = t.shape[d]
        if n > length:
            t = t.narrow(d, 0, length)
        elif n < length:
            pad = [0, 0] * (t.dim() - d - 1) + [0, length - n]
            t = F.pad(t, pad)
    return t


def max_positions(encoder: PreTrainedModel) -> int | None:
    """Tokens a row may have in ``encoder``: its position embeddings, less RoBERTa's offset (its positions start
    after the padding index); None when its config names no limit."""
    positions = getattr(encoder.config, "max_position_embeddings", None)
    if not isinstance(positions, int):
        return None
    padding_idx = getattr(getattr(encoder, "embeddings", None), "padding_idx", None)
    return positions - (padding_idx + 1 if isinstance(padding_idx, int) else 0)


def drop_rows(backbone: Backbone, state: State, leaving: Tensor) -> State:
    """The state without the rows marked in ``leaving`` ((B,) bool)."""
    return backbone.select_rows(state, ~leaving)
