"""One adapter per encoder family: how geep steps each family one layer at a time (``base.Family``).

Each family is one registered file (``bert``, ``electra``, ``distilbert``, ``albert``, ``mpnet``, ``deberta``,
``deberta_v2``, ``modernbert``); :func:`family_for` picks one from a model's config. Nothing above
``geep.modeling.backbone`` knows which family it runs.
"""

from geep.modeling.families.base import Family, HaltingModules, LayerShape, Teacher
from geep.modeling.families.registry import FAMILIES, family_for, register, supported

# Importing a family's file registers it (the order is the order messages and the README list them in).
from geep.modeling.families import (  # noqa: E402,F401,I001
    bert, electra, distilbert, albert, mpnet, deberta, deberta_v2, modernbert)

__all__ = ["FAMILIES", "Family", "HaltingModules", "LayerShape", "Teacher", "family_for", "register", "supported"]
