"""Training: one loop over an objective's stages (``loop``) and the model card written beside a model (``card``)."""

from geep.training.loop import EncodedData, TrainingArguments, TrainResult, evaluate, train

__all__ = ["EncodedData", "TrainResult", "TrainingArguments", "evaluate", "train"]
