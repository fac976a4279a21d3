"""The registry of encoder-family adapters, looked up by config.json's ``model_type``."""

from __future__ import annotations

import logging

from transformers import PreTrainedConfig
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, MODEL_FOR_MASKED_LM_MAPPING_NAMES

from geep.errors import GeepError
from geep.modeling.families.base import Family

logger = logging.getLogger(__name__)

FAMILIES: dict[str, Family] = {}  # name -> adapter
_BY_MODEL_TYPE: dict[str, Family] = {}
FALLBACK = "bert"  # a model type no adapter names is stepped as BERT-shaped, and kept only if the parity check passes


def register(cls: type[Family]) -> type[Family]:
    """Class decorator: registers an adapter under its name and its model types."""
    family = cls()
    if family.name in FAMILIES:
        raise ValueError(f"encoder family {family.name!r} registered twice")
    FAMILIES[family.name] = family
    for model_type in family.model_types:
        _BY_MODEL_TYPE[model_type] = family
    return cls


def supported() -> str:
    """The families geep steps, as messages name them."""
    return ", ".join(family.title for family in FAMILIES.values())


def family_for(config: PreTrainedConfig) -> Family:
    """The adapter that steps a model with this config. A decoder or an encoder-decoder is a one-line GeepError; a
    model type no adapter names is stepped as BERT-shaped (``FALLBACK``), which the backbone then checks."""
    model_type = getattr(config, "model_type", None) or "?"
    if getattr(config, "is_encoder_decoder", False):
        raise GeepError(f"{model_type} is an encoder-decoder model; geep steps encoders: {supported()}")
    if model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        raise GeepError(f"{model_type} is a decoder (causal attention); geep steps encoders: {supported()}")
    if getattr(config, "is_decoder", False):
        raise GeepError(f"this {model_type} model is configured as a decoder (causal attention); geep steps "
                        f"encoders: {supported()}")
    family = _BY_MODEL_TYPE.get(model_type)
    if family is None:
        logger.info("no adapter names model type %s: stepping it as BERT-shaped, if it is", model_type)
        return FAMILIES[FALLBACK]
    return family
