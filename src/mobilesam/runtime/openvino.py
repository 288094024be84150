"""The exported graphs on OpenVINO's CPU plugin, in f32 or bf16, with compiled models cached on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .layout import ExportedGraphs
from .sessions import GraphSessions

# OpenVINO's names of what the encoder computes in.
OPENVINO_PRECISIONS = {"fp32": "f32", "bf16": "bf16"}


class OpenVinoSessions(GraphSessions):
    """The encoder and decoder graphs of one export, compiled by OpenVINO for the CPU.

    The decoder always computes in f32: it is small, and its logits are thresholded
    at 0, where bf16's 8 bits of mantissa would flip pixels.

    Args:
        graphs: From `find_graphs` (an int8 encoder is an OpenVINO IR, the rest ONNX).
        precision: "fp32" or "bf16" for the encoder's float layers (an int8 encoder's
            remaining float layers run in f32 either way, so its numerics are the int8 ones).
        threads: Inference threads; None lets OpenVINO choose (one per core).
        cache_dir: Where OpenVINO keeps compiled models, so a later process skips compiling; None: no cache.

    Raises:
        ImportError: openvino is not installed.
        RuntimeError: bf16 asked for on a CPU that cannot compute it (OpenVINO would quietly run f32).
    """

    def __init__(
        self,
        graphs: ExportedGraphs,
        *,
        precision: str = "fp32",
        threads: int | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        super().__init__(graphs)
        try:
            import openvino as ov
        except ImportError as err:
            raise ImportError(f"the openvino backends need openvino: pip install 'mobilesam[openvino]' ({err})") from None
        if precision not in OPENVINO_PRECISIONS:
            raise ValueError(f"unknown OpenVINO precision {precision!r}; known: {', '.join(OPENVINO_PRECISIONS)}")
        core = ov.Core()
        if precision == "bf16" and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            raise RuntimeError(
                "this CPU has no bf16 arithmetic (AVX-512 BF16 or AMX), so OpenVINO would run f32 "
                "under a bf16 name; use the 'openvino' backend"
            )
        encoder_precision = "fp32" if graphs.encoder.suffix == ".xml" else precision
        self.encoder = core.compile_model(graphs.encoder, "CPU", _config(encoder_precision, threads, cache_dir))
        self.decoder = core.compile_model(graphs.decoder, "CPU", _config("fp32", threads, cache_dir))

    def _run_encoder(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        # A request per call: OpenVINO's requests must not be shared between threads.
        return self.encoder.create_infer_request().infer(feeds)[0]

    def _run_decoder(self, feeds: dict[str, np.ndarray], outputs: tuple[str, ...]) -> list[np.ndarray]:
        results = self.decoder.create_infer_request().infer(feeds)
        return [results[self.decoder.output(name)] for name in outputs]


def _config(precision: str, threads: int | None, cache_dir: Path | None) -> dict[str, object]:
    config: dict[str, object] = {"INFERENCE_PRECISION_HINT": OPENVINO_PRECISIONS[precision]}
    if threads is not None:
        config["INFERENCE_NUM_THREADS"] = threads
    if cache_dir is not None:
        # One cache folder per precision: OpenVINO 2026.4's cache key leaves the precision
        # hint out, and a blob compiled for f32 and then loaded for bf16 gives only NaN.
        config["CACHE_DIR"] = str(cache_dir / precision)
    return config
