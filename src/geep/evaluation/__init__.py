"""Evaluation on labelled data: score every knob from one pass (``sweep``), choose and store knobs
(``calibrate``), build the exit table (``build_table``), and the metrics they report (``metrics``)."""

from geep.evaluation.build_table import auto_build_threshold, build_table
from geep.evaluation.calibrate import CALIBRATED_POLICIES, calibrate
from geep.evaluation.metrics import interpolated_throughput, macro_f1, pareto_frontier
from geep.evaluation.sweep import KnobPoint, Sweep, choose_knob, choose_policy, replay, sweep

__all__ = ["CALIBRATED_POLICIES", "KnobPoint", "Sweep", "auto_build_threshold", "build_table", "calibrate",
           "choose_knob", "choose_policy", "interpolated_throughput", "macro_f1", "pareto_frontier", "replay",
           "sweep"]
