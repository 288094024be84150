"""int8 quantisation of an exported encoder graph with onnxruntime."""

from __future__ import annotations

import logging
from pathlib import Path

logger = logging.getLogger(__name__)

QUANTIZATIONS = ("int8",)


def quantized_name(path: Path, quantize: str) -> Path:
    """`encoder.onnx` -> `encoder.int8.onnx`."""
    return path.with_name(f"{path.stem}.{quantize}{path.suffix}")


def quantize_int8(source: Path, target: Path) -> Path:
    """Dynamic int8 quantisation: int8 weights of MatMul/Gemm, activations quantised at run time.

    Convolutions stay fp32 (dynamic quantisation has no int8 conv on CPU).

    Args:
        source: fp32 ONNX graph.
        target: Where to write the quantised graph (written atomically).

    Raises:
        ImportError: onnxruntime is not installed.
    """
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as err:
        raise ImportError(f"int8 quantisation needs onnxruntime: pip install 'mobilesam[onnx]' ({err})") from None
    from ..io.atomic import atomic_path

    with atomic_path(target) as tmp:
        quantize_dynamic(source, tmp, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])
    logger.info("wrote %s", target)
    return target
