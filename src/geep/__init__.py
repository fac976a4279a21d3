"""geep: fast BERT-style text classifiers by early exiting (GEEP and the batched baselines)."""

from geep.config import GeepConfig
from geep.errors import GeepError
from geep.model import MultiExitClassifier, MultiExitOutput, PredictionOutput

__all__ = ["GeepConfig", "GeepError", "MultiExitClassifier", "MultiExitOutput", "PredictionOutput"]
__version__ = "0.1.0"
