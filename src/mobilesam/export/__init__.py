"""ONNX export of the image encoder and the prompt decoder, int8 quantisation, and the onnxruntime backend.

Needs the `onnx` extra: ``pip install 'mobilesam[onnx]'``.
"""

from .exporter import DECODER_FILE, ENCODER_FILE, METADATA_FILE, OPSET, export_onnx
from .quantize import QUANTIZATIONS, quantized_name

__all__ = ["DECODER_FILE", "ENCODER_FILE", "METADATA_FILE", "OPSET", "QUANTIZATIONS", "export_onnx", "quantized_name"]
