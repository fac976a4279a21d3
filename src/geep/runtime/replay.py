"""Recorded logits as a backend: every exit's logits of every row, from one all-exits pass, served by row id.

Running the real scheduler and a policy on this backend gives each row the exit and the probabilities the same run
on the model gives it (a row's logits do not depend on its batch), and the executor counts the FLOPs of the steps
the scheduler planned. That is how calibration and the bench score every knob from one pass over the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from geep.errors import GeepError


@dataclass
class ReplayState:
    """Rows in flight: their ids (B,) into the recording and the layer they have reached."""

    row_ids: Tensor
    layer: int


class ReplayBackend:
    """Serves ``exit_logits`` (N, |E|, K) (every column an exit outputs: the task's, then any exit-module signal),
    recorded in the order of ``exit_layers``, by row id."""

    def __init__(self, exit_logits: Tensor, exit_layers: Sequence[int], num_layers: int) -> None:
        if exit_logits.dim() != 3 or exit_logits.shape[1] != len(exit_layers):
            raise ValueError(f"exit logits of shape {tuple(exit_logits.shape)} for exits {list(exit_layers)}")
        self.logits = exit_logits
        self.exit_layers = list(exit_layers)
        self.num_layers = num_layers
        self.num_outputs = exit_logits.shape[-1]
        self.device = exit_logits.device
        self._index = {k: i for i, k in enumerate(self.exit_layers)}

    def embed(self, row_ids: Sequence[int], input_ids: Sequence[Sequence[int]] | None = None,
              token_type_ids: Sequence[Sequence[int]] | None = None, halt_tokens: bool = False) -> ReplayState:
        if halt_tokens:  # recorded all-exit logits were computed with every token running
            raise GeepError("recorded logits cannot replay token halting (hashee); run it on the model")
        return ReplayState(torch.tensor(list(row_ids), dtype=torch.long, device=self.device), 0)

    def run_layers(self, state: ReplayState, to_layer: int) -> ReplayState:
        if not state.layer <= to_layer <= self.num_layers:
            raise ValueError(f"cannot run from layer {state.layer} to {to_layer} (L = {self.num_layers})")
        return ReplayState(state.row_ids, to_layer)

    def read_head(self, state: ReplayState) -> Tensor:
        return self.logits[:, self._index[state.layer]].index_select(0, state.row_ids)

    def select(self, state: ReplayState, keep: Tensor) -> ReplayState:
        return ReplayState(state.row_ids.index_select(0, keep.to(self.device)), state.layer)

    def gather(self, parts: Sequence[tuple[ReplayState, Tensor]], order: Tensor) -> ReplayState:
        ids = torch.cat([state.row_ids.index_select(0, keep.to(self.device)) for state, keep in parts])
        return ReplayState(ids.index_select(0, order.to(self.device)), parts[0][0].layer)

    def token_layers(self, state: ReplayState) -> None:
        return None

    def row_ids(self, state: ReplayState) -> Tensor:
        return state.row_ids
