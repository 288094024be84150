"""`from mobilesam.models.sam import Predictor as SAMPredictor`, as Ultralytics' docs import theirs."""

from ..api import SAM
from ..ultralytics_predictor import Predictor

__all__ = ["SAM", "Predictor"]
