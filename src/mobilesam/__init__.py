"""mobilesam: prompt-guided image segmentation with MobileSAM and SAM."""

from .api import SAM
from .automatic import SamAutomaticMaskGenerator
from .errors import CheckpointError, DownloadError, MobileSamError, UnknownModelError
from .modeling import Sam
from .predictor import SamPredictor
from .registry import MODEL_CONFIGS, build_sam, load_sam, sam_model_registry
from .results import Results

__version__ = "0.1.0"

__all__ = [
    "MODEL_CONFIGS",
    "SAM",
    "CheckpointError",
    "DownloadError",
    "MobileSamError",
    "Results",
    "Sam",
    "SamAutomaticMaskGenerator",
    "SamPredictor",
    "UnknownModelError",
    "build_sam",
    "load_sam",
    "sam_model_registry",
]
