"""The exported graphs on onnxruntime's CPU provider."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .layout import ExportedGraphs
from .sessions import GraphSessions


class OnnxRuntimeSessions(GraphSessions):
    """The encoder and decoder graphs of one export, on onnxruntime's CPU provider.

    Args:
        graphs: From `find_graphs`.
        threads: Intra-op threads; None lets onnxruntime choose (one per core).

    Raises:
        ImportError: onnxruntime is not installed.
    """

    def __init__(self, graphs: ExportedGraphs, *, threads: int | None = None) -> None:
        super().__init__(graphs)
        self.encoder = onnxruntime_session(graphs.encoder, threads=threads)
        self.decoder = onnxruntime_session(graphs.decoder, threads=threads)

    def _run_encoder(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        (image_embeddings,) = self.encoder.run(None, feeds)
        return image_embeddings

    def _run_decoder(self, feeds: dict[str, np.ndarray], outputs: tuple[str, ...]) -> list[np.ndarray]:
        return self.decoder.run(list(outputs), feeds)


def onnxruntime_session(path: str | os.PathLike[str], *, threads: int | None = None) -> Any:
    """An `onnxruntime.InferenceSession` of one graph on the CPU provider, all graph optimisations on.

    Args:
        path: The .onnx file.
        threads: Intra-op threads; None lets onnxruntime choose (one per core).

    Raises:
        ImportError: onnxruntime is not installed.
    """
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise ImportError(f"onnx inference needs onnxruntime: pip install 'mobilesam[onnx]' ({err})") from None
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads is not None:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])
