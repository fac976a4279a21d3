"""Inference on top of the model: a run resolved once (``spec``), the row builder and answer function shared by every
surface (``rows``), the executor loop (scheduler x backend x policy), offline runs, and the user API (``predictor``:
``geep.predict``, ``geep.Predictor``). Other layers import ``spec``, ``rows`` and ``runs``, never ``predictor``."""

from geep.inference.inputs import knob_from, label_ids
from geep.inference.outputs import ExitLogits, PolicyRun, PredictionOutput
from geep.inference.predictor import Predictor, predict
from geep.inference.rows import Prepared, answers, build_rows, predicted_layers, prepare
from geep.inference.runs import all_exit_logits, run_policy, run_spec
from geep.inference.spec import RunSpec, require_table, resolve_device, resolve_run

__all__ = ["ExitLogits", "PolicyRun", "PredictionOutput", "Predictor", "Prepared", "RunSpec", "all_exit_logits",
           "answers", "build_rows", "knob_from", "label_ids", "predict", "predicted_layers", "prepare",
           "require_table", "resolve_device", "resolve_run", "run_policy", "run_spec"]
