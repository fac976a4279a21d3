"""DeBERTa-v2 and v3 (He et al. 2021, 2023): DeBERTa's disentangled attention with log-bucketed relative positions
(``position_buckets``), optionally shared position projections (``share_att_key``), a layer-normed relative
embedding table, and, in v2's large models, a convolution (``encoder.conv``, ConvLayer) run after the first layer on
the embeddings h_0 with layer 1's output as its residual (DebertaV2Encoder.forward). Layer 1 is only ever run on h_0,
so the adapter applies the convolution inside layer 1. Post-norm.

Inputs, padding and the fine-tuned head (``ContextPooler``, dropout, ``classifier``) are DeBERTa's
(``geep.modeling.families.deberta``).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor
from transformers import PreTrainedConfig, PreTrainedModel
from transformers.models.deberta_v2.modeling_deberta_v2 import ContextPooler

from geep.modeling.families.base import LayerShape
from geep.modeling.families.deberta import Deberta, DebertaClassifier, _relative_terms
from geep.modeling.families.registry import register


class DebertaV2Classifier(DebertaClassifier):
    """DebertaV2ForSequenceClassification's head (DeBERTa-v2's own ContextPooler)."""

    pooler_class = ContextPooler


@register
class DebertaV2(Deberta):
    name = "deberta-v2"
    title = "DeBERTa-v2/v3"
    model_types = ("deberta-v2",)
    head_class = DebertaV2Classifier

    def layer(self, encoder: PreTrainedModel, k: int, hidden: Tensor, inputs: Any) -> Tensor:
        out = super().layer(encoder, k, hidden, inputs)
        if k == 1 and encoder.encoder.conv is not None:  # hidden is h_0 here
            out = encoder.encoder.conv(hidden, out, inputs["input_mask"])
        return out

    def layer_shapes(self, config: PreTrainedConfig) -> list[LayerShape]:
        H = config.hidden_size
        A = config.num_attention_heads * getattr(config, "attention_head_size", H // config.num_attention_heads)
        terms = _relative_terms(config)
        share = getattr(config, "share_att_key", False)
        span = config.max_relative_positions if config.max_relative_positions >= 1 else config.max_position_embeddings
        if getattr(config, "position_buckets", -1) > 0:
            span = config.position_buckets
        products = 3 * H * A + H * H + 2 * H * config.intermediate_size  # Q, K, V (H x A); output H x H; FFN
        shape = LayerShape(products, 2 * A, relative_terms=terms, relative_projections=(2 if share else terms)
                           if terms else 0, relative_width=A, relative_hidden=H, relative_span=span if terms else 0)
        E = getattr(config, "embedding_size", None) or H
        once = (E * H if E != H else 0)  # embed_proj
        if getattr(config, "conv_kernel_size", 0) > 0:  # ConvLayer: Conv1d(H, H, kernel, groups)
            once += H * (H // getattr(config, "conv_groups", 1)) * config.conv_kernel_size
        first = LayerShape(**{**shape.__dict__, "once_products": once})
        return [first] + [shape] * (config.num_hidden_layers - 1)
