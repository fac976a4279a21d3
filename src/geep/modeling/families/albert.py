"""ALBERT (Lan et al. 2020): embeddings in a narrow width E, projected to the hidden size by
``encoder.embedding_hidden_mapping_in``; then L layers that share their weights: layer k runs the layer group
``albert_layer_groups[g]`` with g = int((k - 1) / (L / G)) for G groups (AlbertTransformer.forward), each group
``inner_group_num`` AlbertLayers. Post-norm.

A fine-tuned classifier is tanh(pooler(h[:, 0])) then ``classifier``: geep's ``linear`` head with first pooling.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn
from transformers import PreTrainedConfig, PreTrainedModel

from geep.errors import GeepError
from geep.modeling.families.base import Family, LayerShape, Teacher, bert_layer_products, linear_teacher
from geep.modeling.families.registry import register


@register
class Albert(Family):
    name = "albert"
    title = "ALBERT"
    model_types = ("albert",)

    def check_structure(self, encoder: PreTrainedModel) -> None:
        if not hasattr(getattr(encoder, "encoder", None), "albert_layer_groups"):
            raise GeepError(f"{type(encoder).__name__} does not expose `encoder.albert_layer_groups`")

    def layers(self, encoder: PreTrainedModel) -> nn.ModuleList:
        return encoder.encoder.albert_layer_groups  # G distinct groups, applied L times

    def num_layers(self, encoder: PreTrainedModel) -> int:
        return encoder.config.num_hidden_layers

    def truncate(self, encoder: PreTrainedModel, k: int) -> None:
        """The first k of L layers: layer j runs group int((j - 1) / (L / G)) (AlbertTransformer.forward). Kept as a
        model of k layers with G' groups, layer j runs int((j - 1) / (k / G')): the smallest G' that gives every
        j <= k its group is kept (with one group, albert-base-v2, every k: the shared layer is applied k times). No
        such G' (the groups cannot be split at k): a one-line GeepError."""
        config = encoder.config
        L, G = config.num_hidden_layers, config.num_hidden_groups
        wanted = [_group(j, L, G) for j in range(1, k + 1)]
        fits = [g for g in range(1, G + 1) if [_group(j, k, g) for j in range(1, k + 1)] == wanted]
        if not fits:
            raise GeepError(f"this ALBERT model spreads {G} layer groups over {L} layers; cut to {k} layers, no "
                            "number of groups runs each of them with its own group")
        del encoder.encoder.albert_layer_groups[fits[0]:]
        config.num_hidden_layers, config.num_hidden_groups = k, fits[0]

    def embed(self, encoder: PreTrainedModel, input_ids: Tensor, attention_mask: Tensor,
              token_type_ids: Tensor | None) -> Tensor:
        hidden = super().embed(encoder, input_ids, attention_mask, token_type_ids)  # (B, T, E)
        return encoder.encoder.embedding_hidden_mapping_in(hidden)  # (B, T, H)

    def layer(self, encoder: PreTrainedModel, k: int, hidden: Tensor, inputs: Any) -> Tensor:
        config = encoder.config
        group = _group(k, config.num_hidden_layers, config.num_hidden_groups)
        return encoder.encoder.albert_layer_groups[group](hidden, inputs)

    def layer_shapes(self, config: PreTrainedConfig) -> list[LayerShape]:
        H, E, repeats = config.hidden_size, config.embedding_size, config.inner_group_num
        shape = LayerShape(bert_layer_products(H, config.intermediate_size), 2 * H, repeats=repeats)
        first = LayerShape(shape.token_products, 2 * H, repeats=repeats, once_products=E * H)  # + the projection
        return [first] + [shape] * (config.num_hidden_layers - 1)

    def teacher(self, classifier: PreTrainedModel) -> Teacher:
        return linear_teacher(classifier.albert.pooler, classifier.classifier)


def _group(k: int, num_layers: int, num_groups: int) -> int:
    """The layer group ALBERT runs at layer k (1-based) of L layers over G groups (AlbertTransformer.forward)."""
    return int((k - 1) / (num_layers / num_groups))
