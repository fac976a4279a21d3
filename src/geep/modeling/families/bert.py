"""BERT-shaped encoders: BERT (Devlin et al. 2019), RoBERTa (Liu et al. 2019), XLM-RoBERTa (Conneau et al. 2020),
CamemBERT (Martin et al. 2020), and MiniLM checkpoints, which are BERT models.

``embeddings(input_ids, token_type_ids)`` then ``encoder.layer[i](h, attention_mask=mask)`` with transformers' own
mask; post-norm, so an exit reads h_k itself. A fine-tuned classifier is tanh(dense(h[:, 0])) then a Linear (BERT's
pooler + classifier, RoBERTa's classification head): geep's ``linear`` head with first-token pooling has that shape.
Token halting calls a layer's ``attention.self`` (query, key, value), ``attention.output``, ``intermediate`` and
``output`` one by one, as ``BertLayer.forward`` does (``halting_modules``).
"""

from __future__ import annotations

from torch import nn
from transformers import PreTrainedModel

from geep.errors import GeepError
from geep.modeling.families.base import Family, HaltingModules, Teacher, linear_teacher
from geep.modeling.families.registry import register


@register
class Bert(Family):
    name = "bert"
    title = "BERT, RoBERTa, XLM-RoBERTa, CamemBERT"
    model_types = ("bert", "roberta", "xlm-roberta", "camembert")

    def teacher(self, classifier: PreTrainedModel) -> Teacher:
        head = getattr(classifier, "classifier", None)
        if head is not None and hasattr(head, "dense") and hasattr(head, "out_proj"):  # RoBERTa's head
            return linear_teacher(head.dense, head.out_proj)
        pooler = getattr(classifier.base_model, "pooler", None)
        if isinstance(head, nn.Linear) and pooler is not None and hasattr(pooler, "dense"):  # BERT's pooler
            return linear_teacher(pooler.dense, head)
        raise GeepError(f"cannot take the classifier of {type(classifier).__name__} as a teacher")

    def halting_modules(self, layer: nn.Module) -> HaltingModules:
        attention = getattr(layer, "attention", None)
        self_attention = getattr(attention, "self", None)
        parts = (self_attention, getattr(attention, "output", None), getattr(layer, "intermediate", None),
                 getattr(layer, "output", None))
        names = ("query", "key", "value", "num_attention_heads", "attention_head_size", "scaling")
        if any(p is None for p in parts) or not all(hasattr(self_attention, n) for n in names):
            raise GeepError(f"token halting cannot find a BERT layer's attention.self (query, key, value), "
                            f"attention.output, intermediate and output in {type(layer).__name__}")
        if getattr(layer, "is_decoder", False) or getattr(layer, "add_cross_attention", False):
            raise GeepError(f"token halting runs encoder layers; this {type(layer).__name__} is a decoder's")
        return HaltingModules(*parts)
