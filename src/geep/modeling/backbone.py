"""Runs a Hugging Face encoder layer by layer.

Notation: h_0 is the embeddings' output and h_k = Layer_k(h_{k-1}) for k = 1..L. The encoder's own modules do
all the work (its embeddings and each ``encoder.layer[i]``); the attention mask is made by transformers' own
``create_bidirectional_mask``. Nothing here copies or patches model code.

A :class:`State` is a batch in flight: the hidden states h_k of the rows still running, their padding mask,
and the row ids that say which input row each one is. Rows leave a state only through :func:`select_rows`,
which indexes every per-row tensor together and rebuilds the attention mask, so no row ever attends with
another row's mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel
from transformers.masking_utils import create_bidirectional_mask

from geep.errors import GeepError


@dataclass
class State:
    """Rows of a batch after ``layer`` layers.

    hidden: (B, T, H) = h_layer of each row; attention_mask: (B, T) 1 for real tokens, 0 for padding (right
    padded); mask: the attention mask transformers' layers take (made from ``attention_mask``; may be None
    when nothing is padded); row_ids: (B,) each row's index in the caller's batch; layer: layers run so far.
    """

    hidden: Tensor
    attention_mask: Tensor
    mask: Tensor | None
    row_ids: Tensor
    layer: int

    @property
    def batch_size(self) -> int:
        return self.hidden.shape[0]

    @property
    def seq_len(self) -> int:
        return self.hidden.shape[1]


class Backbone(nn.Module):
    """A Hugging Face encoder (BERT, RoBERTa, MiniLM, ...) stepped one layer at a time.

    The wrapped model must expose ``embeddings`` and ``encoder.layer`` and must not be a decoder.
    """

    def __init__(self, encoder: PreTrainedModel) -> None:
        super().__init__()
        if not hasattr(encoder, "embeddings") or not hasattr(getattr(encoder, "encoder", None), "layer"):
            raise GeepError(
                f"{type(encoder).__name__} does not expose `embeddings` and `encoder.layer`; "
                "geep supports BERT-shaped encoders (BERT, RoBERTa, MiniLM, ...)"
            )
        if getattr(encoder, "pooler", None) is not None:
            encoder.pooler = None  # the exits pool for themselves; an unused pooler would only be saved
        self.encoder = encoder

    @property
    def config(self):
        return self.encoder.config

    @property
    def layers(self) -> nn.ModuleList:
        return self.encoder.encoder.layer

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def max_positions(self) -> int | None:
        """Tokens a row may have (:func:`max_positions`)."""
        return max_positions(self.encoder)

    def attention_mask_for(self, hidden: Tensor, attention_mask: Tensor) -> Tensor | None:
        """The mask the layers take, made by transformers for this model's attention implementation."""
        return create_bidirectional_mask(config=self.config, inputs_embeds=hidden, attention_mask=attention_mask)

    def embed(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        token_type_ids: Tensor | None = None,
        row_ids: Tensor | None = None,
    ) -> State:
        """h_0 for a batch of token ids (B, T)."""
        kwargs = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        hidden = self.encoder.embeddings(input_ids=input_ids, **kwargs)  # (B, T, H)
        if row_ids is None:
            row_ids = torch.arange(input_ids.shape[0], device=input_ids.device)
        return State(hidden, attention_mask, self.attention_mask_for(hidden, attention_mask), row_ids, 0)

    def layer(self, k: int, hidden: Tensor, mask: Tensor | None) -> Tensor:
        """Layer_k (1-based) on hidden states (B, T, H) with a mask from :meth:`attention_mask_for`."""
        out = self.layers[k - 1](hidden, attention_mask=mask)
        return out[0] if isinstance(out, tuple) else out  # transformers 5 returns a Tensor; older ones a tuple

    def run_layers(self, state: State, to_layer: int) -> State:
        """Runs layers ``state.layer + 1 .. to_layer`` and returns the state at h_{to_layer}."""
        if not state.layer <= to_layer <= self.num_layers:
            raise ValueError(f"cannot run from layer {state.layer} to {to_layer} (L = {self.num_layers})")
        hidden = state.hidden
        for k in range(state.layer + 1, to_layer + 1):
            hidden = self.layer(k, hidden, state.mask)
        return State(hidden, state.attention_mask, state.mask, state.row_ids, to_layer)

    def select_rows(self, state: State, keep: Tensor, trim: bool = True) -> State:
        """The state of the rows picked by ``keep`` ((B,) bool mask or long indices).

        Every per-row tensor is indexed together and the layers' mask is rebuilt from the kept rows' padding
        mask. With ``trim``, columns that are padding for every kept row are dropped (rows are right padded),
        so the survivors run at their own longest length.
        """
        if keep.dtype == torch.bool:
            keep = keep.nonzero().squeeze(1)
        hidden = state.hidden.index_select(0, keep)  # (B', T, H)
        attention_mask = state.attention_mask.index_select(0, keep)  # (B', T)
        if trim and hidden.shape[0] > 0:
            length = int(attention_mask.sum(1).max())
            hidden, attention_mask = hidden[:, :length], attention_mask[:, :length]
        return State(
            hidden,
            attention_mask,
            self.attention_mask_for(hidden, attention_mask),
            state.row_ids.index_select(0, keep),
            state.layer,
        )


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
