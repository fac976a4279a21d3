"""The PyTorch module as a backend: a :class:`MultiExitClassifier` stepped layer by layer (``geep.modeling``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from geep.modeling.backbone import State
from geep.modeling.model import MultiExitClassifier
from geep.tokens import pad_token_ids


class TorchBackend:
    """Runs a model's own modules: embeddings, ``encoder.layer[i]`` and the exit heads, on the model's device."""

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
              token_type_ids: Sequence[Sequence[int]] | None = None) -> State:
        """h_0 of the rows, padded to their longest; the state's row_ids are ``row_ids``."""
        device = self.device
        batch = pad_token_ids(input_ids, token_type_ids, self.pad_id, device)
        ids = torch.tensor(list(row_ids), dtype=torch.long, device=device)
        return self.model.embed(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"), ids)

    def run_layers(self, state: State, to_layer: int) -> State:
        return self.model.run_layers(state, to_layer)

    def read_head(self, state: State) -> Tensor:
        """Outputs (B, K + S) in fp32, whatever the model's dtype: policies decide on fp32 confidences."""
        return self.model.exit_logits(state).float()

    def select(self, state: State, keep: Tensor) -> State:
        return self.model.select_rows(state, keep.to(state.hidden.device))

    def gather(self, parts: Sequence[tuple[State, Tensor]], order: Tensor) -> State:
        """The picked rows of every part, padded to the longest part and concatenated, then in ``order``."""
        T = max(state.seq_len for state, _ in parts)
        hidden, mask, ids = [], [], []
        for state, keep in parts:
            keep = keep.to(state.hidden.device)
            pad = T - state.seq_len
            hidden.append(F.pad(state.hidden.index_select(0, keep), (0, 0, 0, pad)))  # (b, T, H)
            mask.append(F.pad(state.attention_mask.index_select(0, keep), (0, pad)))  # (b, T)
            ids.append(state.row_ids.index_select(0, keep))
        pooled = State(torch.cat(hidden), torch.cat(mask), None, torch.cat(ids), parts[0][0].layer)
        return self.model.select_rows(pooled, order.to(pooled.hidden.device))

    def row_ids(self, state: State) -> Tensor:
        return state.row_ids
