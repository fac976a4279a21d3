"""ModernBERT (Warner et al. 2024): a pre-norm encoder with rotary positions and alternating attention. Layer k is
``layers[k - 1](h, attention_mask=..., position_embeddings=(cos, sin))`` with the mask and the rotary table of its
layer type (``config.layer_types``: ``full_attention``, or ``sliding_attention``, whose mask lets a query see keys
within ``config.sliding_window`` of it); ModernBertModel.forward makes one of each per batch, and applies
``final_norm`` after the last layer.

Pre-norm: h_k is not normalised, so every exit reads ``final_norm(h_k)``, as ``last_hidden_state`` is
``final_norm(h_L)``. Each row's position ids (B, T) are a per-row extra. A fine-tuned classifier pools (its config's
``classifier_pooling``: the first token or the mean over real tokens), then runs ``ModernBertPredictionHead`` (dense,
activation, norm), dropout and ``classifier``: exit L runs those modules themselves (the ``classifier`` head).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from transformers import PreTrainedConfig, PreTrainedModel
from transformers.masking_utils import create_bidirectional_mask, create_bidirectional_sliding_window_mask
from transformers.models.modernbert.modeling_modernbert import ModernBertPredictionHead

from geep.errors import GeepError
from geep.modeling.families.base import Family, LayerShape, Teacher
from geep.modeling.families.registry import register

_POOLING = {"cls": "first", "mean": "mean"}  # classifier_pooling -> geep's name


class ModernBertClassifier(nn.Module):
    """ModernBertForSequenceClassification's head on final_norm(h_L) (B, T, H) -> logits (B, C)."""

    def __init__(self, config: PreTrainedConfig, num_labels: int) -> None:
        super().__init__()
        self.pooling = config.classifier_pooling
        self.head = ModernBertPredictionHead(config)
        self.drop = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(config.hidden_size, num_labels)

    def forward(self, hidden: Tensor, attention_mask: Tensor) -> Tensor:
        if self.pooling == "cls":
            pooled = hidden[:, 0]  # (B, H)
        else:  # as ModernBertForSequenceClassification.forward computes the mean
            pooled = (hidden * attention_mask.unsqueeze(-1)).sum(dim=1) / attention_mask.sum(dim=1, keepdim=True)
        return self.classifier(self.drop(self.head(pooled)))


@register
class ModernBert(Family):
    name = "modernbert"
    title = "ModernBERT"
    model_types = ("modernbert",)
    extra_dims = {"position_ids": (1,)}  # (B, T)

    def check_structure(self, encoder: PreTrainedModel) -> None:
        if not all(hasattr(encoder, name) for name in ("embeddings", "layers", "final_norm", "rotary_emb")):
            raise GeepError(f"{type(encoder).__name__} does not expose ModernBERT's embeddings, layers, final_norm "
                            "and rotary_emb")

    def layers(self, encoder: PreTrainedModel) -> nn.ModuleList:
        return encoder.layers

    def embed(self, encoder: PreTrainedModel, input_ids: Tensor, attention_mask: Tensor,
              token_type_ids: Tensor | None) -> Tensor:
        return encoder.embeddings(input_ids=input_ids)  # ModernBERT has no token types

    def forward_kwargs(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor) -> dict[str, Tensor]:
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    def extras(self, encoder: PreTrainedModel, hidden: Tensor, attention_mask: Tensor) -> dict[str, Tensor]:
        B, T = attention_mask.shape
        return {"position_ids": torch.arange(T, device=hidden.device).expand(B, T)}  # right padded: 0..T-1

    def inputs(self, encoder: PreTrainedModel, hidden: Tensor, attention_mask: Tensor,
               extras: dict[str, Tensor]) -> Any:
        config = encoder.config
        kwargs = {"config": config, "inputs_embeds": hidden, "attention_mask": attention_mask}
        masks = {"full_attention": create_bidirectional_mask(**kwargs),
                 "sliding_attention": create_bidirectional_sliding_window_mask(**kwargs)}
        rotary = {t: encoder.rotary_emb(hidden, extras["position_ids"], t) for t in set(config.layer_types)}
        return masks, rotary  # per layer type: the mask; (cos, sin) (B, T, head_dim) each

    def layer(self, encoder: PreTrainedModel, k: int, hidden: Tensor, inputs: Any) -> Tensor:
        masks, rotary = inputs
        layer = encoder.layers[k - 1]
        return layer(hidden, attention_mask=masks[layer.attention_type],
                     position_embeddings=rotary[layer.attention_type])

    def output(self, encoder: PreTrainedModel, hidden: Tensor) -> Tensor:
        return encoder.final_norm(hidden)

    def parity_length(self, config: PreTrainedConfig) -> int:
        # Longer than a local layer's window, so a missing sliding-window mask would show.
        return max(8, min(config.sliding_window + 3, config.max_position_embeddings))

    def layer_shapes(self, config: PreTrainedConfig) -> list[LayerShape]:
        H, I = config.hidden_size, config.intermediate_size
        products = 3 * H * H + H * H + 2 * H * I + I * H  # Wqkv, Wo; the gated Wi (H -> 2I) and mlp.Wo
        return [LayerShape(products, 2 * H, window=config.sliding_window if t == "sliding_attention" else None)
                for t in config.layer_types]

    def teacher(self, classifier: PreTrainedModel) -> Teacher:
        weights = {f"head.{k}": v for k, v in classifier.head.state_dict().items()}
        weights |= {f"classifier.{k}": v for k, v in classifier.classifier.state_dict().items()}
        return Teacher("classifier", _POOLING[classifier.config.classifier_pooling], weights)

    def classifier_head(self, config: PreTrainedConfig, num_labels: int) -> nn.Module:
        return ModernBertClassifier(config, num_labels)
