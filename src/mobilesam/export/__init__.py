"""Building graphs from torch: export by format (`export_model`, the `FORMATS` table), reduced-precision encoders, the export cache.

Running the graphs is `mobilesam.runtime`'s job (torch-free). Names are imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_attributes

_EXPORTS = {
    "EXPORT_FORMATS": ".formats",
    "FORMATS": ".formats",
    "ExportFormat": ".formats",
    "export_format": ".formats",
    "OPSET": ".exporter",
    "SamOnnxModel": ".wrappers",
    "check_format": ".formats",
    "export_anylabeling": ".anylabeling",
    "export_model": ".formats",
    "export_onnx": ".exporter",
    "export_sam_decoder": ".sam",
    "export_sam_onnx": ".sam",
    "export_web": ".web",
    "cached_export": ".cache",
    "weights_digest": ".cache",
    "write_quantized_encoder": ".quantize",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from .anylabeling import export_anylabeling
    from .cache import cached_export, weights_digest
    from .exporter import OPSET, export_onnx
    from .formats import EXPORT_FORMATS, FORMATS, ExportFormat, check_format, export_format, export_model
    from .quantize import write_quantized_encoder
    from .sam import export_sam_decoder, export_sam_onnx
    from .web import export_web
    from .wrappers import SamOnnxModel


__getattr__, __dir__ = lazy_attributes(__name__, _EXPORTS)
