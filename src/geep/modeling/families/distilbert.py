"""DistilBERT (Sanh et al. 2019): ``embeddings(input_ids)`` (no token types), then
``transformer.layer[i](h, attention_mask=mask)``; post-norm.

A fine-tuned classifier reads the first token: ``pre_classifier``, ReLU, dropout, ``classifier``
(DistilBertForSequenceClassification.forward); exit L holds those two Linears under the same names (the
``classifier`` head) and applies the same ReLU between them.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from transformers import PreTrainedConfig, PreTrainedModel

from geep.modeling.families.base import Family, LayerShape, Teacher, bert_layer_products
from geep.modeling.families.registry import register


class DistilBertClassifier(nn.Module):
    """DistilBertForSequenceClassification's head on h_L (B, T, H) -> logits (B, C)."""

    def __init__(self, config: PreTrainedConfig, num_labels: int) -> None:
        super().__init__()
        self.pre_classifier = nn.Linear(config.dim, config.dim)
        self.classifier = nn.Linear(config.dim, num_labels)
        self.dropout = nn.Dropout(config.seq_classif_dropout)

    def forward(self, hidden: Tensor, attention_mask: Tensor) -> Tensor:
        pooled = torch.relu(self.pre_classifier(hidden[:, 0]))  # (B, H)
        return self.classifier(self.dropout(pooled))


@register
class DistilBert(Family):
    name = "distilbert"
    title = "DistilBERT"
    model_types = ("distilbert",)

    def check_structure(self, encoder: PreTrainedModel) -> None:
        if not hasattr(getattr(encoder, "transformer", None), "layer"):
            super().check_structure(encoder)

    def layers(self, encoder: PreTrainedModel) -> nn.ModuleList:
        return encoder.transformer.layer

    def embed(self, encoder: PreTrainedModel, input_ids: Tensor, attention_mask: Tensor,
              token_type_ids: Tensor | None) -> Tensor:
        return encoder.embeddings(input_ids)  # DistilBERT has no token types

    def forward_kwargs(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor) -> dict[str, Tensor]:
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    def layer_shapes(self, config: PreTrainedConfig) -> list[LayerShape]:
        return [LayerShape(bert_layer_products(config.dim, config.hidden_dim), 2 * config.dim)] * config.n_layers

    def teacher(self, classifier: PreTrainedModel) -> Teacher:
        weights = {f"pre_classifier.{k}": v for k, v in classifier.pre_classifier.state_dict().items()}
        weights |= {f"classifier.{k}": v for k, v in classifier.classifier.state_dict().items()}
        return Teacher("classifier", "first", weights)

    def classifier_head(self, config: PreTrainedConfig, num_labels: int) -> nn.Module:
        return DistilBertClassifier(config, num_labels)
