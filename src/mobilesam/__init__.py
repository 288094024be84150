"""mobilesam: prompt-guided image segmentation with MobileSAM and SAM.

Names are imported on first use (PEP 562), so `import mobilesam` stays
light and `mobilesam.OnnxPredictor` runs on onnxruntime or OpenVINO without loading
torch at all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .lazy import keep_exports_over_submodules, lazy_attributes

__version__ = "0.1.0"

# Public name -> the module that defines it.
_EXPORTS = {
    "SAM": ".api",
    "auto_annotate": ".annotate",
    "SamAutomaticMaskGenerator": ".automatic",
    "CheckpointError": ".errors",
    "DownloadError": ".errors",
    "ImageTooLarge": ".errors",
    "MobileSamError": ".errors",
    "UnknownModelError": ".errors",
    "ImageEmbedding": ".embedding",
    "EmbeddingStore": ".embedding_store",
    "EmbeddingStoreError": ".embedding_store",
    "OnnxPredictor": ".runtime.predictor",
    "Sam": ".modeling",
    "SamPredictor": ".predictor",
    "MODEL_CONFIGS": ".registry",
    "build_sam": ".registry",
    "load_sam": ".registry",
    "sam_model_registry": ".registry",
    "Results": ".results",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from .annotate import auto_annotate
    from .api import SAM
    from .automatic import SamAutomaticMaskGenerator
    from .embedding import ImageEmbedding
    from .embedding_store import EmbeddingStore, EmbeddingStoreError
    from .errors import CheckpointError, DownloadError, ImageTooLarge, MobileSamError, UnknownModelError
    from .modeling import Sam
    from .predictor import SamPredictor
    from .registry import MODEL_CONFIGS, build_sam, load_sam, sam_model_registry
    from .results import Results
    from .runtime.predictor import OnnxPredictor


__getattr__, __dir__ = lazy_attributes(__name__, _EXPORTS)
# `mobilesam.build_sam` is the function, as in segment_anything, also after
# `from mobilesam.build_sam import sam_model_registry` imports the module of that name.
keep_exports_over_submodules(__name__, ["build_sam"])
