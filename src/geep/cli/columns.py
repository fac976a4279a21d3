"""Which columns a command reads with a saved model: the flags, else the columns the model was trained on.

A text pair column only makes sense for a model trained on pairs: ``--text-pair-column`` on a model trained on
single texts would feed it inputs it never saw (``[CLS] a [SEP] b [SEP]``), so it is an error, not a silent
change of task.
"""

from __future__ import annotations

from geep.errors import GeepError
from geep.modeling.config import GeepConfig


def pair_column(given: str | None, config: GeepConfig, model: str = "the model") -> str | None:
    """The text pair column to read: ``given`` or the model's; GeepError when ``given`` names one for a model
    trained on single texts."""
    if given is not None and config.text_pair_column is None:
        raise GeepError(f"--text-pair-column {given}: {model} was trained on single texts (no text pair column); "
                        "drop the flag")
    return given or config.text_pair_column
