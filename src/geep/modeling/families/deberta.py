"""DeBERTa (He et al. 2021): disentangled attention. Every layer takes, besides h, DeBERTa's own attention mask
(B, 1, T, T) = m_i m_j (``encoder.get_attention_mask``), the relative positions (1, T, T) of every query and key
(``encoder.get_rel_pos``) and the relative-position embeddings (``encoder.get_rel_embedding``):
``layer(h, mask, query_states=None, relative_pos=..., rel_embeddings=...)`` (DebertaEncoder.forward). The embeddings
zero the padded tokens (``mask=``). Post-norm. None of these has a batch dimension but the mask, which is rebuilt
from the kept rows whenever rows leave.

A fine-tuned classifier reads ``ContextPooler`` (dense + the config's activation on the first token), dropout,
``classifier``: exit L runs those modules themselves (the ``classifier`` head).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn
from transformers import PreTrainedConfig, PreTrainedModel
from transformers.models.deberta.modeling_deberta import ContextPooler

from geep.modeling.families.base import Family, LayerShape, Teacher, bert_layer_products
from geep.modeling.families.registry import register


class DebertaClassifier(nn.Module):
    """Deberta(V2)ForSequenceClassification's head on h_L (B, T, H) -> logits (B, C)."""

    pooler_class: type[nn.Module] = ContextPooler

    def __init__(self, config: PreTrainedConfig, num_labels: int) -> None:
        super().__init__()
        self.pooler = self.pooler_class(config)
        self.classifier = nn.Linear(self.pooler.output_dim, num_labels)
        dropout = getattr(config, "cls_dropout", None)
        self.dropout = nn.Dropout(config.hidden_dropout_prob if dropout is None else dropout)

    def forward(self, hidden: Tensor, attention_mask: Tensor) -> Tensor:
        return self.classifier(self.dropout(self.pooler(hidden)))


@register
class Deberta(Family):
    name = "deberta"
    title = "DeBERTa"
    model_types = ("deberta",)
    head_class: type[nn.Module] = DebertaClassifier

    def embed(self, encoder: PreTrainedModel, input_ids: Tensor, attention_mask: Tensor,
              token_type_ids: Tensor | None) -> Tensor:
        return encoder.embeddings(input_ids=input_ids, token_type_ids=token_type_ids, mask=attention_mask)

    def inputs(self, encoder: PreTrainedModel, hidden: Tensor, attention_mask: Tensor,
               extras: dict[str, Tensor]) -> Any:
        layers = encoder.encoder
        return {"attention_mask": layers.get_attention_mask(attention_mask),  # (B, 1, T, T)
                "relative_pos": layers.get_rel_pos(hidden),  # (1, T, T), or None without relative attention
                "rel_embeddings": layers.get_rel_embedding(),  # (2 span, H), or None
                "input_mask": attention_mask}  # (B, T): DeBERTa-v2's convolution reads it

    def layer(self, encoder: PreTrainedModel, k: int, hidden: Tensor, inputs: Any) -> Tensor:
        out, _ = encoder.encoder.layer[k - 1](hidden, inputs["attention_mask"], query_states=None,
                                              relative_pos=inputs["relative_pos"],
                                              rel_embeddings=inputs["rel_embeddings"])
        return out

    def layer_shapes(self, config: PreTrainedConfig) -> list[LayerShape]:
        H, nh = config.hidden_size, config.num_attention_heads
        pair = 2 * H + (2 * nh * nh if getattr(config, "talking_head", False) else 0)  # + head_logits/weights_proj
        terms = _relative_terms(config)
        span = config.max_relative_positions if config.max_relative_positions >= 1 else config.max_position_embeddings
        shape = LayerShape(bert_layer_products(H, config.intermediate_size), pair, relative_terms=terms,
                           relative_projections=terms, relative_width=H, relative_hidden=H,
                           relative_span=span if terms else 0, span_follows_length=True)
        return [shape] * config.num_hidden_layers

    def teacher(self, classifier: PreTrainedModel) -> Teacher:
        weights = {f"pooler.{k}": v for k, v in classifier.pooler.state_dict().items()}
        weights |= {f"classifier.{k}": v for k, v in classifier.classifier.state_dict().items()}
        return Teacher("classifier", "first", weights)

    def classifier_head(self, config: PreTrainedConfig, num_labels: int) -> nn.Module:
        return self.head_class(config, num_labels)


def _relative_terms(config: PreTrainedConfig) -> int:
    """How many relative-position score terms (c2p, p2c) each attention adds."""
    if not getattr(config, "relative_attention", False):
        return 0
    return sum(term in (config.pos_att_type or []) for term in ("c2p", "p2c"))
