"""A cascade as one backend: its members' backends, whose layers run in sequence (``geep.modeling.cascade``).

The cascade's layer o_m + k is member m's layer k. A state holds the rows' state in the member they are in, and
their token ids (B, T), right padded and trimmed with the rows, so that a row moving past member m's last layer is
embedded afresh by member m + 1 (from its token ids and padding mask) and runs that member's layers. Heads are read
in the first member's label order. Rows leave, are selected and pooled exactly as on one model: every per-row tensor
of the member's state and the token ids move together. The executor, the scheduler and the policies see one backend
of L = sum L_m layers with exits E = union of (o_m + E_m).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from geep.errors import GeepError

from geep.runtime.torch_backend import TorchBackend
from geep.tokens import pad_token_ids


@dataclass
class CascadeState:
    """Rows in member ``member`` (0-based): that member's state, their token ids (B, T) and token types (or None),
    T the member state's padded length, and the cascade's layer they have reached."""

    member: int
    inner: Any
    input_ids: Tensor
    token_type_ids: Tensor | None
    layer: int

    @property
    def seq_len(self) -> int:
        return self.input_ids.shape[1]


class CascadeBackend:
    """Runs a cascade's members (each a :class:`TorchBackend`, at any precision) as one backend of
    ``sum L_m`` layers. ``offsets``: o_m; ``label_order[m]``: member m's class index of each cascade label."""

    def __init__(self, members: Sequence[TorchBackend], offsets: Sequence[int], exit_layers: Sequence[int],
                 label_order: Sequence[Sequence[int]]) -> None:
        self.members = list(members)
        self.offsets = list(offsets)
        self.ends = [o + m.num_layers for o, m in zip(self.offsets, self.members)]
        self.num_layers = self.ends[-1]
        self.exit_layers = list(exit_layers)
        self.num_outputs = self.members[0].num_outputs  # classifiers without an exit module (check_members): C
        self.pad_id = self.members[0].pad_id
        self._order = [None if list(order) == list(range(len(order))) else torch.tensor(order, dtype=torch.long)
                       for order in label_order]

    @property
    def device(self) -> torch.device:
        return self.members[0].device

    def _embed(self, m: int, row_ids: Tensor, input_ids: Tensor, attention_mask: Tensor,
               token_type_ids: Tensor | None) -> CascadeState:
        """h_0 of member m for rows (B, T) that reached the cascade's layer o_m."""
        inner = self.members[m].model.embed(input_ids, attention_mask, token_type_ids, row_ids)
        return CascadeState(m, inner, input_ids, token_type_ids, self.offsets[m])

    def embed(self, row_ids: Sequence[int], input_ids: Sequence[Sequence[int]],
              token_type_ids: Sequence[Sequence[int]] | None = None, halt_tokens: bool = False) -> CascadeState:
        """Member 1's h_0 of the rows, padded to their longest."""
        if halt_tokens:
            raise GeepError("a cascade does not halt tokens (hashee runs on one model)")
        batch = pad_token_ids(input_ids, token_type_ids, self.pad_id, self.device)
        ids = torch.tensor(list(row_ids), dtype=torch.long, device=self.device)
        return self._embed(0, ids, batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))

    def run_layers(self, state: CascadeState, to_layer: int) -> CascadeState:
        """The cascade's layers state.layer + 1 .. to_layer: the rest of the current member's, then, past its last
        layer, the next member's from its embeddings."""
        if not state.layer <= to_layer <= self.num_layers:
            raise ValueError(f"cannot run from layer {state.layer} to {to_layer} (L = {self.num_layers})")
        while True:
            m = state.member
            local = min(to_layer, self.ends[m]) - self.offsets[m]
            inner = self.members[m].run_layers(state.inner, local)
            state = CascadeState(m, inner, state.input_ids, state.token_type_ids, self.offsets[m] + local)
            if to_layer <= self.ends[m]:
                return state
            state = self._embed(m + 1, inner.row_ids, state.input_ids, inner.attention_mask, state.token_type_ids)

    def read_head(self, state: CascadeState) -> Tensor:
        """Logits (B, C) of the exit at the state's layer, in the cascade's label order."""
        logits = self.members[state.member].read_head(state.inner)
        order = self._order[state.member]
        return logits if order is None else logits.index_select(1, order.to(logits.device))

    def select(self, state: CascadeState, keep: Tensor) -> CascadeState:
        keep = keep.to(state.input_ids.device)
        inner = self.members[state.member].select(state.inner, keep)
        T = inner.attention_mask.shape[1]  # the member trimmed the padding no kept row needs
        types = None if state.token_type_ids is None else state.token_type_ids.index_select(0, keep)[:, :T]
        return CascadeState(state.member, inner, state.input_ids.index_select(0, keep)[:, :T], types, state.layer)

    def gather(self, parts: Sequence[tuple[CascadeState, Tensor]], order: Tensor) -> CascadeState:
        """The picked rows of every part (all in one member, at one layer), pooled in ``order``, as the member pools
        them; their token ids padded, pooled and trimmed alike."""
        first = parts[0][0]
        inner = self.members[first.member].gather([(state.inner, keep) for state, keep in parts], order)
        T_max = max(state.seq_len for state, _ in parts)
        T = inner.attention_mask.shape[1]
        order = order.to(first.input_ids.device)

        def pooled(tensors: list[Tensor], value: int) -> Tensor:
            return torch.cat([F.pad(t, (0, T_max - t.shape[1]), value=value) for t in tensors]
                             ).index_select(0, order)[:, :T]

        ids = pooled([s.input_ids.index_select(0, k.to(s.input_ids.device)) for s, k in parts], self.pad_id)
        types = None
        if first.token_type_ids is not None:
            types = pooled([s.token_type_ids.index_select(0, k.to(s.input_ids.device)) for s, k in parts], 0)
        return CascadeState(first.member, inner, ids, types, first.layer)

    def token_layers(self, state: CascadeState) -> None:
        return None

    def row_ids(self, state: CascadeState) -> Tensor:
        return state.inner.row_ids
