"""The exported graphs on Tencent's ncnn (CPU), in fp32."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .layout import ExportedGraphs
from .sessions import GraphSessions


class NcnnSessions(GraphSessions):
    """The encoder and decoder graphs of one `ncnn` export (.param/.bin pairs), on ncnn's CPU layers.

    ncnn stores, packs and computes in fp16 by default where the CPU can (ARMv8.2 phones);
    that moves logits near 0 and so flips mask pixels. Here those three options are off,
    so the graphs run in fp32 as exported.

    pnnx names a graph's blobs in0, in1, ... and out0, out1, ... in the order of the
    sidecar's input and output names; an ncnn Mat has no batch axis, so inputs lose their
    leading 1 (all but the 1-D ones) and outputs get it back.

    Args:
        graphs: From `find_graphs`.
        threads: ncnn's `num_threads`; None: ncnn's default (one per big core).

    Raises:
        ImportError: ncnn is not installed.
        ValueError: A .param or .bin file is missing, corrupt or truncated, or its blobs are not pnnx's.
    """

    def __init__(self, graphs: ExportedGraphs, *, threads: int | None = None) -> None:
        super().__init__(graphs)
        try:
            import ncnn
        except ImportError as err:
            raise ImportError(f"the ncnn runtime needs ncnn: pip install 'mobilesam[ncnn]' ({err})") from None
        self._ncnn = ncnn
        self.encoder = _load(ncnn, graphs.encoder, len(graphs.encoder_inputs), 1, threads)
        self.decoder = _load(ncnn, graphs.decoder, len(graphs.decoder_inputs), len(graphs.decoder_outputs), threads)

    def _run_encoder(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        (image_embeddings,) = self._run(self.encoder, self.graphs.encoder_inputs, feeds, ("out0",))
        return image_embeddings

    def _run_decoder(self, feeds: dict[str, np.ndarray], outputs: tuple[str, ...]) -> list[np.ndarray]:
        names = self.graphs.decoder_outputs
        return self._run(self.decoder, self.graphs.decoder_inputs, feeds, tuple(f"out{names.index(name)}" for name in outputs))

    def _run(self, net: Any, inputs: tuple[str, ...], feeds: dict[str, np.ndarray], blobs: tuple[str, ...]) -> list[np.ndarray]:
        """`blobs` of `net` for `feeds`, on an extractor of this call's own (so calls may run in parallel)."""
        extractor = net.create_extractor()
        for index, name in enumerate(inputs):
            value = feeds[name]
            if value.ndim > 1:
                if value.shape[0] != 1:
                    raise ValueError(f"ncnn runs one image and one prompt at a time; {name} has {value.shape[0]}")
                value = value[0]
            # ncnn's in-place layers may write into an input Mat: give it a copy, not the caller's array.
            extractor.input(f"in{index}", self._ncnn.Mat(np.ascontiguousarray(value, np.float32)).clone())
        results = []
        for blob in blobs:
            status, mat = extractor.extract(blob)
            if status != 0:
                raise RuntimeError(f"ncnn could not compute {blob} (error {status})")
            results.append(np.array(mat, np.float32)[None])
        return results


def _load(ncnn: Any, param: Path, num_inputs: int, num_outputs: int, threads: int | None) -> Any:
    """An fp32 `ncnn.Net` of `param` and the .bin beside it, checked to have pnnx's blob names.

    Raises:
        ValueError: A file is missing, corrupt or truncated, or the blob names are not in0.. / out0...
    """
    net = ncnn.Net()
    # Options take effect when the layers are created, so they are set before loading.
    net.opt.use_fp16_storage = False
    net.opt.use_fp16_packed = False
    net.opt.use_fp16_arithmetic = False
    if threads is not None:
        net.opt.num_threads = threads
    weights = param.with_suffix(".bin")
    if net.load_param(str(param)) != 0:
        raise ValueError(
            f"ncnn cannot read {param}: missing, corrupt or not an ncnn .param; export again with `mobilesam export`"
        )
    if net.load_model(str(weights)) != 0:
        raise ValueError(
            f"ncnn cannot read {weights}: missing, truncated or not the weights of {param.name}; "
            "export again with `mobilesam export`"
        )
    expected = ([f"in{index}" for index in range(num_inputs)], [f"out{index}" for index in range(num_outputs)])
    if (set(net.input_names()), set(net.output_names())) != (set(expected[0]), set(expected[1])):
        raise ValueError(
            f"{param} has blobs {net.input_names()} -> {net.output_names()}, not pnnx's {expected[0]} -> {expected[1]}; "
            "export again with `mobilesam export`"
        )
    return net
