"""ONNX export (`export_onnx`), int8 quantisation, and onnxruntime inference over the exported graphs.

Names are imported on first use, so the torch-free `OnnxPredictor` does not
pull in the exporter's torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_attributes

_EXPORTS = {
    "OPSET": ".exporter",
    "export_onnx": ".exporter",
    "DECODER_FILE": ".layout",
    "ENCODER_FILE": ".layout",
    "METADATA_FILE": ".layout",
    "OnnxPredictor": ".predictor",
    "QUANTIZATIONS": ".quantize",
    "quantized_name": ".quantize",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from .exporter import OPSET, export_onnx
    from .layout import DECODER_FILE, ENCODER_FILE, METADATA_FILE
    from .predictor import OnnxPredictor
    from .quantize import QUANTIZATIONS, quantized_name


__getattr__, __dir__ = lazy_attributes(__name__, _EXPORTS)
