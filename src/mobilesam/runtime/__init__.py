"""Torch-free inference over the graphs of `mobilesam export`, in any runtime of the `RUNTIMES` table, on numpy and Pillow.

`OnnxPredictor` gives `SamPredictor`'s interface on numpy arrays over any export
folder a runtime here runs; `open_export` loads one in a named runtime, and
`open_sessions` in the runtime and precision a graph backend's name stands for
("onnx", "onnx-int8", "openvino", "openvino-bf16", "openvino-int8").
Names are imported on first use, so importing this package loads no runtime.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_attributes

_EXPORTS = {
    "GRAPH_BACKENDS": ".engines",
    "open_sessions": ".engines",
    "openvino_cache_dir": ".engines",
    "DECODER_FILE": ".layout",
    "ENCODER_FILE": ".layout",
    "METADATA_FILE": ".layout",
    "QUANTIZATIONS": ".layout",
    "QUANTIZED_ENCODER_FILES": ".layout",
    "ExportedGraphs": ".layout",
    "find_graphs": ".layout",
    "OnnxRuntimeSessions": ".onnxruntime",
    "OpenVinoSessions": ".openvino",
    "OnnxPredictor": ".predictor",
    "RUNTIMES": ".runtimes",
    "Runtime": ".runtimes",
    "open_export": ".runtimes",
    "GraphSessions": ".sessions",
    "onnx_points": ".sessions",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from .engines import GRAPH_BACKENDS, open_sessions, openvino_cache_dir
    from .layout import (
        DECODER_FILE,
        ENCODER_FILE,
        METADATA_FILE,
        QUANTIZATIONS,
        QUANTIZED_ENCODER_FILES,
        ExportedGraphs,
        find_graphs,
    )
    from .onnxruntime import OnnxRuntimeSessions
    from .openvino import OpenVinoSessions
    from .predictor import OnnxPredictor
    from .runtimes import RUNTIMES, Runtime, open_export
    from .sessions import GraphSessions, onnx_points


__getattr__, __dir__ = lazy_attributes(__name__, _EXPORTS)
