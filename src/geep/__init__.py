"""geep: fast BERT-style text classifiers by early exiting (GEEP and the batched baselines).

The layers, bottom to top (imports run one way; see ARCHITECTURE.md): ``modeling`` (the model), ``exit_table``,
``policies``, ``runtime`` (backends), ``scheduling`` (the scheduler), ``inference`` (predict), ``evaluation``
(sweep, calibrate, build the table), ``training``, ``bench``, ``cli``.
"""

from geep.errors import GeepError
from geep.evaluation import build_table, calibrate
from geep.inference import PredictionOutput, Predictor, predict
from geep.modeling import GeepConfig, MultiExitClassifier, MultiExitOutput

__all__ = ["GeepConfig", "GeepError", "MultiExitClassifier", "MultiExitOutput", "PredictionOutput", "Predictor",
           "build_table", "calibrate", "predict"]
__version__ = "0.1.0"
