"""geep: fast BERT-style text classifiers by early exiting (GEEP and the batched baselines).

The layers, bottom to top (imports run one way; see ARCHITECTURE.md): ``modeling`` (the model), ``exit_table``,
``policies``, ``runtime`` (backends), ``scheduling`` (the scheduler), ``inference`` (predict), ``evaluation``
(sweep, calibrate, build the table), ``training``, ``bench``, ``cli``.

The public names below are imported on first use (PEP 562), so that ``import geep.cli.main``, what the ``geep``
command runs first, loads no torch: the command line's start-up imports then happen inside ``main``, where a
Ctrl-C is caught (exit 130, no traceback).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Each public name and the module that defines it.
_EXPORTS = {
    "GeepConfig": "geep.modeling", "GeepError": "geep.errors", "MultiExitClassifier": "geep.modeling",
    "MultiExitOutput": "geep.modeling", "PredictionOutput": "geep.inference", "Predictor": "geep.inference",
    "build_table": "geep.evaluation", "calibrate": "geep.evaluation", "predict": "geep.inference",
}
__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"

if TYPE_CHECKING:
    from geep.errors import GeepError
    from geep.evaluation import build_table, calibrate
    from geep.inference import PredictionOutput, Predictor, predict
    from geep.modeling import GeepConfig, MultiExitClassifier, MultiExitOutput


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'geep' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
