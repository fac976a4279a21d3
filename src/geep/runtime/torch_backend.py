"""The PyTorch module as a backend: a :class:`MultiExitClassifier` stepped layer by layer (``geep.modeling``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from geep.modeling.backbone import State
from geep.modeling.model import MultiExitClassifier
from geep.runtime.token_halting import halting_state, run_state
from geep.tokens import pad_token_ids


class TorchBackend:
    """Runs a model's own modules (its embeddings, layers and exit heads, stepped by ``geep.modeling``'s backbone)
    on the model's device."""

    def __init__(self, model: MultiExitClassifier) -> None:
        self.model = model
        self.num_layers = model.num_layers
        self.exit_layers = list(model.exit_layers)
        self.num_outputs = model.output_size
        self.pad_id = model.pad_token_id

    @property
    def device(self) -> torch.device:
        return self.model.device

    def embed(self, row_ids: Sequence[int], input_ids: Sequence[Sequence[int]],
              token_type_ids: Sequence[Sequence[int]] | None = None, halt_tokens: bool = False) -> State:
        """h_0 of the rows, padded to their longest; the state's row_ids are ``row_ids``. With ``halt_tokens``,
        each token carries the layer the model's token hash gives it (``geep.runtime.token_halting``)."""
        device = self.device
        batch = pad_token_ids(input_ids, token_type_ids, self.pad_id, device)
        ids = torch.tensor(list(row_ids), dtype=torch.long, device=device)
        state = self.model.embed(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"), ids)
        return halting_state(self.model, state, batch["input_ids"]) if halt_tokens else state

    def run_layers(self, state: State, to_layer: int) -> State:
        """Layers up to ``to_layer``; a state whose tokens halt runs the token-halting step (only its active tokens
        are queries and run the feed-forward)."""
        if state.token_layers is not None:
            return run_state(self.model.backbone, state, to_layer)
        return self.model.run_layers(state, to_layer)

    def token_layers(self, state: State) -> Tensor | None:
        return state.token_layers

    def read_head(self, state: State) -> Tensor:
        """Outputs (B, K + S) in fp32, whatever the model's dtype: policies decide on fp32 confidences."""
        return self.model.exit_logits(state).float()

    def select(self, state: State, keep: Tensor) -> State:
        return self.model.select_rows(state, keep.to(state.hidden.device))

    def gather(self, parts: Sequence[tuple[State, Tensor]], order: Tensor) -> State:
        """The picked rows of every part, padded to the longest part and concatenated, then in ``order``
        (``Backbone.gather_rows``: each row's extras move with it)."""
        return self.model.gather_rows(parts, order)

    def row_ids(self, state: State) -> Tensor:
        return state.row_ids


class LengthGroupedBackend(TorchBackend):
    """A :class:`TorchBackend` that runs the rows of a step one length at a time, unpadded.

    For an int8 model whose encoder computes attention in its own modelling code (MPNet, DeBERTa: no
    AttentionInterface to switch to ``geep.runtime.exact_attention``): a row then attends over its own length, as
    alone, whatever its batch. Rows are split by length with :meth:`select` (trimmed, so nothing is padded), each
    group runs its layers, and :meth:`gather` puts them back in the step's order; every other operation is
    TorchBackend's. Slower than one padded call when a step mixes many lengths, the same when it does not.
    """

    def run_layers(self, state: State, to_layer: int) -> State:
        if state.token_layers is not None:  # the halting step attends over each row's own length already
            return run_state(self.model.backbone, state, to_layer)
        lengths = state.attention_mask.sum(1)  # (B,)
        if bool((lengths == state.seq_len).all()):  # nothing padded: one call, as alone
            return self.model.run_layers(state, to_layer)
        parts, members = [], []
        for n in lengths.unique().tolist():
            rows = (lengths == n).nonzero().squeeze(1)  # (b,) positions in the step
            group = self.model.run_layers(self.select(state, rows), to_layer)  # (b, n, H)
            parts.append((group, torch.arange(len(rows), device=rows.device)))
            members.append(rows)
        order = torch.cat(members).argsort()  # row i of the step is row order[i] of the concatenation
        return self.gather(parts, order)
