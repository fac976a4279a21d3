"""Tiny random models of every encoder family geep steps, built from transformers' own config classes (no network),
with the tests' WordPiece vocabulary saved beside them.

Random position parameters are tiny (std 0.02), so a missing position input would hide in rounding:
:func:`scale_positions` scales them up (MPNet's relative attention bias, DeBERTa's relative embeddings and their
norm), as :func:`build` does for every model it returns.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (AlbertConfig, AutoModel, AutoModelForSequenceClassification, BertConfig, CamembertConfig,
                          DebertaConfig, DebertaV2Config, DistilBertConfig, ElectraConfig, ModernBertConfig,
                          MPNetConfig, PreTrainedModel, RobertaConfig, XLMRobertaConfig)

from tests.helpers import tiny_tokenizer

LABELS = ("bad", "good", "meh")
_BERT = dict(vocab_size=99, hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=37,
             max_position_embeddings=64, pad_token_id=0)
_ROBERTA = {**_BERT, "max_position_embeddings": 66, "pad_token_id": 1}  # positions start after the padding index
_DEBERTA = dict(_BERT, relative_attention=True, pos_att_type=["c2p", "p2c"], max_relative_positions=16,
                type_vocab_size=0)

# case -> (config class, its arguments); the case name says which shape of the family it is.
CONFIGS = {
    "bert": (BertConfig, _BERT),
    "roberta": (RobertaConfig, _ROBERTA),
    "xlm-roberta": (XLMRobertaConfig, _ROBERTA),
    "camembert": (CamembertConfig, _ROBERTA),
    "electra-small": (ElectraConfig, dict(_BERT, embedding_size=16)),  # embedding 16 != hidden 32: projected
    "electra-base": (ElectraConfig, dict(_BERT, embedding_size=32)),
    "distilbert": (DistilBertConfig, dict(vocab_size=99, dim=32, n_layers=4, n_heads=2, hidden_dim=37,
                                          max_position_embeddings=64, pad_token_id=0)),
    "albert": (AlbertConfig, dict(_BERT, embedding_size=16, num_hidden_groups=2, inner_group_num=2)),
    "mpnet": (MPNetConfig, dict(_BERT, max_position_embeddings=66)),
    "deberta": (DebertaConfig, _DEBERTA),
    "deberta-v2": (DebertaV2Config, dict(_DEBERTA, position_buckets=8, max_relative_positions=32,
                                         norm_rel_ebd="layer_norm", conv_kernel_size=3, conv_act="gelu",
                                         embedding_size=16)),
    "deberta-v3": (DebertaV2Config, dict(_DEBERTA, position_buckets=8, max_relative_positions=32,
                                         norm_rel_ebd="layer_norm", share_att_key=True, position_biased_input=False)),
    "modernbert": (ModernBertConfig, dict(vocab_size=99, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                                          intermediate_size=37, max_position_embeddings=64, pad_token_id=0,
                                          bos_token_id=2, eos_token_id=3, cls_token_id=2, sep_token_id=3,
                                          local_attention=6, global_attn_every_n_layers=2,
                                          classifier_pooling="mean")),
}
CASES = list(CONFIGS)
WINDOW = CONFIGS["modernbert"][1]["local_attention"] // 2  # ModernBERT's half-window: 3 tokens either side


def config(case: str, fine_tuned: bool = False, **overrides):
    """The tiny config of ``case`` (with labels when ``fine_tuned``)."""
    cls, kwargs = CONFIGS[case]
    kwargs = dict(kwargs, **overrides)
    if fine_tuned:
        kwargs.update(num_labels=len(LABELS), id2label=dict(enumerate(LABELS)),
                      label2id={name: i for i, name in enumerate(LABELS)})
    return cls(**kwargs)


def scale_positions(model: PreTrainedModel) -> PreTrainedModel:
    """Scales up the random position parameters a layer-by-layer run could forget (see the module docstring)."""
    base = model.base_model
    with torch.no_grad():
        encoder = getattr(base, "encoder", None)
        bias = getattr(encoder, "relative_attention_bias", None)  # MPNet: (buckets, nh)
        if bias is not None:
            bias.weight.normal_(0.0, 2.0)
        rel = getattr(encoder, "rel_embeddings", None)  # DeBERTa: (2 span, H)
        if rel is not None:
            rel.weight.normal_(0.0, 1.0)
            norm = getattr(encoder, "LayerNorm", None)  # v2's norm of the relative embeddings
            if norm is not None:
                norm.weight.mul_(100.0)
        for module in base.modules():  # DeBERTa's position projections, so c2p / p2c are not drowned out
            for name in ("pos_proj", "pos_q_proj", "pos_key_proj", "pos_query_proj"):
                proj = getattr(module, name, None)
                if proj is not None:
                    proj.weight.mul_(40.0)
    return model


def build(case: str, fine_tuned: bool = False, seed: int = 0, **overrides) -> PreTrainedModel:
    """A tiny random model of ``case`` in eval mode: the bare encoder, or its ``*ForSequenceClassification``."""
    torch.manual_seed(seed)
    auto = AutoModelForSequenceClassification if fine_tuned else AutoModel
    return scale_positions(auto.from_config(config(case, fine_tuned, **overrides))).eval()


def save(directory: Path, case: str, fine_tuned: bool = False, seed: int = 0, **overrides) -> Path:
    """A saved tiny model of ``case`` + the WordPiece tokenizer."""
    build(case, fine_tuned, seed, **overrides).save_pretrained(directory)
    tiny_tokenizer(directory).save_pretrained(directory)
    return directory
