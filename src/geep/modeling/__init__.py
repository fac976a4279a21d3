"""The model and nothing more: config, backbone stepping, exit heads, the multi-exit module and the training
objectives. Nothing here imports inference, evaluation, training, serving or the command line."""

from geep.modeling.config import GeepConfig
from geep.modeling.model import MultiExitClassifier, MultiExitOutput, resolve_model_path

__all__ = ["GeepConfig", "MultiExitClassifier", "MultiExitOutput", "resolve_model_path"]
