"""Building graphs from torch: ONNX export (`export_onnx`), int8 encoders, and the export cache of the graph backends.

Running the graphs is `mobilesam.runtime`'s job (torch-free). Names are imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_attributes

_EXPORTS = {
    "OPSET": ".exporter",
    "export_onnx": ".exporter",
    "cached_export": ".cache",
    "weights_digest": ".cache",
    "write_quantized_encoder": ".quantize",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from .cache import cached_export, weights_digest
    from .exporter import OPSET, export_onnx
    from .quantize import write_quantized_encoder


__getattr__, __dir__ = lazy_attributes(__name__, _EXPORTS)
