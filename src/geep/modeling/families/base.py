"""What an encoder family's adapter says, and the BERT-shaped defaults most families keep.

An adapter (:class:`Family`) tells :class:`geep.modeling.backbone.Backbone` how to step one family of Hugging Face
encoders one layer at a time with the family's own modules:

- ``embed``: h_0 (B, T, H) from token ids: the embeddings module, and any projection to the hidden size the model
  applies before its first layer;
- ``extras``: per-row tensors made once per batch at embedding time, each with a batch dimension first and its
  token dimensions named in ``extra_dims`` (a bias (B, nh, T, T) has token dims (2, 3)): rows that leave a batch
  take theirs along, trimmed and padded with them (``select_rows``, ``gather_rows``);
- ``inputs``: what every layer takes besides h, rebuilt whenever a batch's rows change (masks, relative
  positions, rotary tables), from the padding mask and the extras;
- ``layer``: Layer_k on (B, T, H), called as the family's own encoder calls it;
- ``output``: what an exit head reads from h_k (``last_hidden_state`` at k = L): h_k itself, or the final norm of a
  pre-norm family;
- ``layer_shapes``: the sizes of each layer's matrix products (``geep.runtime.flops`` turns them into FLOPs);
- ``teacher``: how a fine-tuned ``*ForSequenceClassification`` head becomes exit L's head;
- ``halting_modules``: the submodules of one layer that token halting (``geep.runtime.token_halting``) calls one by
  one, so that only the active tokens are queries (BERT-shaped families; others refuse in one line);
- ``truncate``: the encoder cut to its first k layers (a static baseline, ``geep train --num-layers``): the layer
  modules past k dropped and the config fields that count layers set to k, so the family's own forward runs k layers
  (the parity check then holds the cut model to that forward).

Adapters hold no tensors and no modules: every method takes the encoder, so a copy of a model (int8, fp16) steps
with the same adapter. They call transformers' own modules and never copy or patch one.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn
from transformers import PreTrainedConfig, PreTrainedModel
from transformers.masking_utils import create_bidirectional_mask

from geep.errors import GeepError


@dataclass(frozen=True)
class LayerShape:
    """The matrix products of one layer at exit k, by size (multiply-adds; ``geep.runtime.flops`` doubles them).

    token_products: per token, every product applied to each token alone (Q, K, V and output projections, the
    feed-forward);
    pair_products: per (query, key) pair attended (scores and weighted values: 2 x the attention width);
    window: a local layer's half-window: a query attends to keys j with |i - j| <= window (None: every key);
    relative_terms, relative_projections, relative_width, relative_hidden, relative_span: DeBERTa's disentangled
    attention: each term (c2p, p2c) multiplies every token with 2s relative embeddings of width relative_width, and
    each projection maps those 2s rows (relative_hidden -> relative_width) once per call, whatever the batch;
    s = relative_span, or min(T, relative_span) when ``span_follows_length`` (DeBERTa v1);
    repeats: the layer's modules run this many times in one layer (ALBERT's inner group);
    once_products: per token, products outside the repeated modules, run once: at layer 1 a projection of the
    embeddings to the hidden size (ELECTRA-small, ALBERT, DeBERTa-v2) and a convolution after it (DeBERTa-v2);
    kv_products: the part of token_products that makes keys and values (H x A each), which token halting still
    runs for halted tokens (they are read as keys and values); 0 where the family does not halt tokens.
    """

    token_products: int
    pair_products: int
    window: int | None = None
    relative_terms: int = 0
    relative_projections: int = 0
    relative_width: int = 0
    relative_hidden: int = 0
    relative_span: int = 0
    span_follows_length: bool = False
    repeats: int = 1
    once_products: int = 0
    kv_products: int = 0


@dataclass(frozen=True)
class HaltingModules:
    """A BERT-shaped layer's own submodules, as token halting calls them (``geep.runtime.token_halting``).

    attention: the self-attention module: its ``query``, ``key`` and ``value`` Linears (H -> A), its head count and
    size (``num_attention_heads``, ``attention_head_size``), ``scaling`` and ``dropout``; attention_output:
    (attention output (N, A), residual (N, H)) -> dense, dropout, LayerNorm (BERT's ``BertSelfOutput``);
    intermediate: (N, H) -> (N, I) with the activation; output: (intermediate (N, I), residual (N, H)) -> dense,
    dropout, LayerNorm (``BertOutput``).
    """

    attention: nn.Module
    attention_output: nn.Module
    intermediate: nn.Module
    output: nn.Module


@dataclass(frozen=True)
class Teacher:
    """How a fine-tuned classifier becomes exit L's head: the head's kind and pooling (``GeepConfig``) and its
    weights, in that head's own key names."""

    kind: str
    pooling: str
    weights: dict[str, Tensor]


def bert_layer_products(hidden: int, intermediate: int, attention: int | None = None) -> int:
    """Multiply-adds per token of a BERT-shaped layer: Q, K, V (H x A), the output projection (A x H) and the two
    feed-forward matrices (H x I, I x H)."""
    A = hidden if attention is None else attention
    return 4 * hidden * A + 2 * hidden * intermediate


class Family:
    """A BERT-shaped encoder: ``embeddings`` then ``encoder.layer[i](h, attention_mask=mask)``. Subclasses override
    what their family does differently (see the module docstring)."""

    name: str = ""  # the registry key
    title: str = ""  # how messages and the README name it
    model_types: tuple[str, ...] = ()  # config.json model_type values it steps
    extra_dims: dict[str, tuple[int, ...]] = {}  # per-row extras -> their token dimensions

    # ------------------------------------------------------------------------------------------------ structure
    def layers(self, encoder: PreTrainedModel) -> nn.ModuleList:
        """The distinct modules that hold the layers' weights (quantised for int8), in order."""
        return encoder.encoder.layer

    def num_layers(self, encoder: PreTrainedModel) -> int:
        """L: layers a row runs through (ALBERT applies fewer distinct modules L times)."""
        return len(self.layers(encoder))

    def num_layers_of(self, config: PreTrainedConfig) -> int:
        """L read from the config alone (before any weight is loaded)."""
        return int(config.num_hidden_layers)

    def check_structure(self, encoder: PreTrainedModel) -> None:
        """GeepError when ``encoder`` lacks the modules this adapter calls."""
        if not hasattr(encoder, "embeddings") or not hasattr(getattr(encoder, "encoder", None), "layer"):
            raise GeepError(f"{type(encoder).__name__} does not expose `embeddings` and `encoder.layer`")

    def truncate(self, encoder: PreTrainedModel, k: int) -> None:
        """Keeps layers 1..k (1 <= k <= L, checked by the caller): drops the layer modules past k and sets the
        config's layer count (and a per-layer ``layer_types`` list, ModernBERT's) to k."""
        del self.layers(encoder)[k:]
        config = encoder.config
        config.num_hidden_layers = k  # DistilBERT's attribute map sets its n_layers
        if isinstance(getattr(config, "layer_types", None), list):
            config.layer_types = config.layer_types[:k]

    def drop_unused(self, encoder: PreTrainedModel) -> None:
        """Drops modules no exit reads (a pooler: the exits pool for themselves; it would only be saved)."""
        if getattr(encoder, "pooler", None) is not None:
            encoder.pooler = None

    # ------------------------------------------------------------------------------------------------ stepping
    def embed(self, encoder: PreTrainedModel, input_ids: Tensor, attention_mask: Tensor,
              token_type_ids: Tensor | None) -> Tensor:
        """h_0 (B, T, H) for token ids (B, T)."""
        kwargs = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        return encoder.embeddings(input_ids=input_ids, **kwargs)

    def extras(self, encoder: PreTrainedModel, hidden: Tensor, attention_mask: Tensor) -> dict[str, Tensor]:
        """Per-row tensors made at embedding time (see the module docstring); none for BERT."""
        return {}

    def inputs(self, encoder: PreTrainedModel, hidden: Tensor, attention_mask: Tensor,
               extras: dict[str, Tensor]) -> Any:
        """What each layer takes besides h: here transformers' mask for the model's attention implementation."""
        return create_bidirectional_mask(config=encoder.config, inputs_embeds=hidden, attention_mask=attention_mask)

    def layer(self, encoder: PreTrainedModel, k: int, hidden: Tensor, inputs: Any) -> Tensor:
        """Layer_k (1-based) on (B, T, H)."""
        out = self.layers(encoder)[k - 1](hidden, attention_mask=inputs)
        return out[0] if isinstance(out, tuple) else out  # transformers 5 returns a Tensor; older ones a tuple

    def output(self, encoder: PreTrainedModel, hidden: Tensor) -> Tensor:
        """What an exit reads from h_k (B, T, H): h_k itself for a post-norm family."""
        return hidden

    def forward_kwargs(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor) -> dict[str, Tensor]:
        """The arguments of the model's own forward for a batch (the parity check's reference run)."""
        return {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}

    def parity_length(self, config: PreTrainedConfig) -> int:
        """Tokens in the parity check's longest row: long enough to reach every position input the family has."""
        return 8

    def halting_modules(self, layer: nn.Module) -> HaltingModules:
        """The submodules of ``layer`` that token halting calls; a family whose layer is not split this way
        refuses in one line (geep never runs token halting approximately)."""
        raise GeepError(f"token halting is not supported for {self.title} encoders; it runs on BERT-shaped "
                        f"encoders (BERT, RoBERTa, MiniLM)")

    # ---------------------------------------------------------------------------------------------- FLOPs, heads
    def layer_shapes(self, config: PreTrainedConfig) -> list[LayerShape]:
        """The shape of each layer k = 1..L (index k - 1)."""
        H = config.hidden_size
        shape = LayerShape(bert_layer_products(H, config.intermediate_size), 2 * H, kv_products=2 * H * H)
        return [shape] * config.num_hidden_layers

    def teacher(self, classifier: PreTrainedModel) -> Teacher:
        """Exit L's head from a fine-tuned ``*ForSequenceClassification`` (call before :meth:`drop_unused`)."""
        raise GeepError(f"cannot take the classifier of {type(classifier).__name__} as a teacher")

    def classifier_head(self, config: PreTrainedConfig, num_labels: int) -> nn.Module:
        """A fresh ``classifier`` head: the family's own sequence-classification head (transformers' modules)."""
        raise GeepError(f"{self.title} has no `classifier` head of its own; use `linear` or `attention`")


def linear_teacher(dense: nn.Linear, out: nn.Linear) -> Teacher:
    """A ``linear`` head (``geep.modeling.heads.LinearHead``, first-token pooling) from a classifier that is
    tanh(dense(h[:, 0])) then a Linear: BERT's pooler + classifier, RoBERTa's and MPNet's classification heads."""
    weights = {f"dense.{k}": v for k, v in dense.state_dict().items()}
    weights |= {f"classifier.{k}": v for k, v in out.state_dict().items()}
    return Teacher("linear", "first", weights)


def with_labels(config: PreTrainedConfig, num_labels: int) -> PreTrainedConfig:
    """A copy of ``config`` with ``num_labels`` classes (what a family's head module reads)."""
    config = copy.deepcopy(config)
    config.num_labels = num_labels
    return config
