"""BERT-shaped encoders: BERT (Devlin et al. 2019), RoBERTa (Liu et al. 2019), XLM-RoBERTa (Conneau et al. 2020),
CamemBERT (Martin et al. 2020), and MiniLM checkpoints, which are BERT models.

``embeddings(input_ids, token_type_ids)`` then ``encoder.layer[i](h, attention_mask=mask)`` with transformers' own
mask; post-norm, so an exit reads h_k itself. A fine-tuned classifier is tanh(dense(h[:, 0])) then a Linear (BERT's
pooler + classifier, RoBERTa's classification head): geep's ``linear`` head with first-token pooling has that shape.
"""

from __future__ import annotations

from torch import nn
from transformers import PreTrainedModel

from geep.errors import GeepError
from geep.modeling.families.base import Family, Teacher, linear_teacher
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
