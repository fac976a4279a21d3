"""MPNet (Song et al. 2020): BERT-shaped layers that add a relative position bias to every attention score:
``layer(h, mask, position_bias)``, the bias made once per batch by ``encoder.compute_position_bias`` from T
relative-position buckets and the learned ``relative_attention_bias``. Post-norm.

The bias has a batch dimension, (B, nh, T, T): it is a per-row extra that moves, is trimmed and is padded with its
rows. A fine-tuned classifier (``MPNetClassificationHead``: dense, tanh, out_proj on the first token) has the shape of
geep's ``linear`` head with first pooling.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor
from transformers import PreTrainedModel

from geep.modeling.families.base import Family, Teacher, linear_teacher
from geep.modeling.families.registry import register


@register
class MPNet(Family):
    name = "mpnet"
    title = "MPNet"
    model_types = ("mpnet",)
    extra_dims = {"position_bias": (2, 3)}  # (B, nh, T, T)

    def embed(self, encoder: PreTrainedModel, input_ids: Tensor, attention_mask: Tensor,
              token_type_ids: Tensor | None) -> Tensor:
        return encoder.embeddings(input_ids=input_ids)  # MPNet has no token types

    def forward_kwargs(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor) -> dict[str, Tensor]:
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    def extras(self, encoder: PreTrainedModel, hidden: Tensor, attention_mask: Tensor) -> dict[str, Tensor]:
        return {"position_bias": encoder.encoder.compute_position_bias(hidden)}  # (B, nh, T, T)

    def inputs(self, encoder: PreTrainedModel, hidden: Tensor, attention_mask: Tensor,
               extras: dict[str, Tensor]) -> Any:
        return super().inputs(encoder, hidden, attention_mask, extras), extras["position_bias"]

    def layer(self, encoder: PreTrainedModel, k: int, hidden: Tensor, inputs: Any) -> Tensor:
        mask, position_bias = inputs
        return encoder.encoder.layer[k - 1](hidden, mask, position_bias=position_bias)[0]

    def teacher(self, classifier: PreTrainedModel) -> Teacher:
        return linear_teacher(classifier.classifier.dense, classifier.classifier.out_proj)
