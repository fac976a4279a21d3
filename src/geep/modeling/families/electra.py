"""ELECTRA (Clark et al. 2020): BERT-shaped layers; the small models embed in a narrower width (embedding_size 128
for hidden 256) and project to the hidden size (``embeddings_project``) before the first layer.

A fine-tuned classifier reads the first token through ``ElectraClassificationHead``: dense, GELU (not BERT's tanh),
out_proj; exit L runs that module itself (the ``classifier`` head).
"""

from __future__ import annotations

from torch import Tensor, nn
from transformers import PreTrainedConfig, PreTrainedModel
from transformers.models.electra.modeling_electra import ElectraClassificationHead

from geep.modeling.families.base import Family, LayerShape, Teacher, bert_layer_products, with_labels
from geep.modeling.families.registry import register


class ElectraClassifier(nn.Module):
    """ElectraForSequenceClassification's head: ``ElectraClassificationHead`` on h_L (B, T, H) -> logits (B, C)."""

    def __init__(self, config: PreTrainedConfig, num_labels: int) -> None:
        super().__init__()
        self.head = ElectraClassificationHead(with_labels(config, num_labels))

    def forward(self, hidden: Tensor, attention_mask: Tensor) -> Tensor:
        return self.head(hidden)


@register
class Electra(Family):
    name = "electra"
    title = "ELECTRA"
    model_types = ("electra",)

    def embed(self, encoder: PreTrainedModel, input_ids: Tensor, attention_mask: Tensor,
              token_type_ids: Tensor | None) -> Tensor:
        hidden = super().embed(encoder, input_ids, attention_mask, token_type_ids)  # (B, T, E)
        if hasattr(encoder, "embeddings_project"):  # E != H: ElectraModel.forward projects here
            hidden = encoder.embeddings_project(hidden)  # (B, T, H)
        return hidden

    def layer_shapes(self, config: PreTrainedConfig) -> list[LayerShape]:
        H, E = config.hidden_size, config.embedding_size
        shape = LayerShape(bert_layer_products(H, config.intermediate_size), 2 * H)
        first = LayerShape(shape.token_products, 2 * H, once_products=E * H if E != H else 0)  # + embeddings_project
        return [first] + [shape] * (config.num_hidden_layers - 1)

    def teacher(self, classifier: PreTrainedModel) -> Teacher:
        weights = {f"head.{k}": v for k, v in classifier.classifier.state_dict().items()}
        return Teacher("classifier", "first", weights)

    def classifier_head(self, config: PreTrainedConfig, num_labels: int) -> nn.Module:
        return ElectraClassifier(config, num_labels)
