"""mobilesam: prompt-guided image segmentation with MobileSAM and SAM."""

from .errors import CheckpointError, DownloadError, MobileSamError, UnknownModelError
from .modeling import Sam
from .registry import MODEL_CONFIGS, build_sam, load_sam, sam_model_registry

__version__ = "0.1.0"

__all__ = [
    "MODEL_CONFIGS",
    "CheckpointError",
    "DownloadError",
    "MobileSamError",
    "Sam",
    "UnknownModelError",
    "build_sam",
    "load_sam",
    "sam_model_registry",
]
