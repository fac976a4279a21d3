"""Inference on top of the model: the predictor (texts -> PredictionOutput), the executor loop (scheduler x
backend x policy) and offline runs."""

from geep.inference.inputs import knob_from
from geep.inference.outputs import ExitLogits, PolicyRun, PredictionOutput
from geep.inference.predictor import Predictor, all_exit_logits, default_policy, label_ids, predict, \
    resolve_device, resolve_knob, run_policy

__all__ = ["ExitLogits", "PolicyRun", "PredictionOutput", "Predictor", "all_exit_logits", "default_policy",
           "knob_from", "label_ids", "predict", "resolve_device", "resolve_knob", "run_policy"]
