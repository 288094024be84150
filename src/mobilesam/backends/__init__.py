"""Backends: what runs the image encoder and the prompt decoder behind a `SamPredictor`.

A backend does all the model's work, on tensors already in the model frame:

- `embed`: (1, 3, S, S) normalised, padded image -> (1, C, S/16, S/16) embedding;
- `decode`: embedding + prompts -> (B, M, 256, 256) low-res logits and (B, M) IoU;
- `decode_candidates`: segment-everything's batches of single-point prompts,
  with the IoU filter applied before any mask is made.

Pre- and post-processing (`Sam.preprocess`, `Sam.postprocess_masks`) stay in
the predictor and the generator, so every backend gives masks through the
same code, and every backend serves every command.

Backends by name (`make_backend`):

- ``torch``: the model's own modules, eager fp32: the reference numerics.
- ``torch-fast``: the encoder copy of `fast_encoder_copy` (BatchNorm
  folded, cache-sized strips of the wide layers, channels-last) in
  `inference_mode`, fp32 on every CPU; the model's decoder with fused
  attention and its upscaling as matrix products (`FastTorchDecoding`).
- ``torch-bf16``: the same encoder copy under bfloat16 autocast, decoder in
  fp32. Not the reference numerics: its masks agree with fp32 on 99.8% of
  pixels (README, "Numerics on each CPU"). Fast only where the hardware computes bf16
  (AVX-512 BF16 or AMX on CPUs, Ampere and later on CUDA); elsewhere it
  warns, since emulated bf16 is many times slower than fp32.
- ``torch-compile``: the same copy compiled by TorchInductor with its
  weights frozen into the graph; the first `embed` compiles (about a minute
  on two cores; inductor caches the kernels on disk for later processes).
- ``onnx``, ``onnx-int8``: onnxruntime over the graphs of `mobilesam export`;
  ``openvino``, ``openvino-bf16``, ``openvino-int8``: OpenVINO over the same
  graphs (int8: an encoder NNCF calibrated on photos). `GraphBackend` runs
  them all; without a folder, the graphs are exported on first use and
  cached under $MOBILESAM_HOME/exports by the weights' hash.
- ``auto``: the fastest of these on this CPU class whose masks reproduce
  fp32's (`fidelity.FAITHFUL`) and whose first image takes seconds, not a
  minute; with ``half=True``, the fastest bf16/int8 engine measured within
  `fidelity.REDUCED` there (`auto_backend_name`, from `auto.MEASURED`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..lazy import lazy_attributes
from .specs import BACKEND_SPECS, BACKENDS, BackendSpec, backend_spec

# Public name -> the module that defines it; imported on first use, so the
# specs are readable without torch (the torch-free RSS probe reads them).
_EXPORTS = {
    "Backend": ".base",
    "CandidateFilter": ".base",
    "Candidates": ".base",
    "GraphBackend": ".graphs",
    "auto_backend_name": ".auto",
    "resolve_backend_name": ".auto",
    "TorchBackend": ".torch",
    "TorchBf16Backend": ".torch",
    "TorchCompileBackend": ".torch",
    "TorchFastBackend": ".torch",
    "has_native_bf16": ".torch",
}

__all__ = sorted([*_EXPORTS, "BACKENDS", "BACKEND_SPECS", "BackendSpec", "backend_spec", "make_backend"])

if TYPE_CHECKING:
    from ..modeling import Sam
    from .auto import auto_backend_name, resolve_backend_name
    from .base import Backend, CandidateFilter, Candidates
    from .graphs import GraphBackend
    from .torch import TorchBackend, TorchBf16Backend, TorchCompileBackend, TorchFastBackend, has_native_bf16


__getattr__, __dir__ = lazy_attributes(__name__, _EXPORTS)


def make_backend(
    name: str,
    model: Sam,
    *,
    onnx_dir: str | os.PathLike[str] | None = None,
    threads: int | None = None,
    half: bool = False,
) -> Backend:
    """The backend called `name` for `model`.

    Args:
        name: One of `BACKENDS`, or "auto" for `auto_backend_name()`'s choice on this machine
            (with `onnx_dir`, among the engines of exported graphs).
        model: The torch model; graph backends still use its pre/post-processing.
        onnx_dir: Folder written by `mobilesam export` for the graph backends (spec `needs_export`);
            None: the model's graphs are exported on first use and cached by its weights' hash.
        threads: Intra-op threads for onnxruntime and OpenVINO (torch uses `torch.set_num_threads`).
        half: With "auto", reduced precision (Ultralytics' word): the fastest bf16/int8 engine
            measured within `fidelity.REDUCED` on this CPU class; where none is, the faithful
            pick, with a warning.

    Raises:
        ValueError: Unknown name, or `half` with the name of an fp32 engine.
        FileNotFoundError: `onnx_dir` lacks the graph the backend needs.
        ImportError: The backend's runtime is not installed.
    """
    from .auto import resolve_backend_name

    spec = backend_spec(resolve_backend_name(name, model.device, graphs_only=onnx_dir is not None, half=half))
    if spec.needs_export:
        from .graphs import GraphBackend

        if onnx_dir is None:
            from ..export.cache import cached_export

            onnx_dir = cached_export(model, spec.quantize)
        return GraphBackend.from_export(onnx_dir, spec.name, model, threads=threads)
    from . import torch as torch_backends

    classes = {
        "torch": torch_backends.TorchBackend,
        "torch-fast": torch_backends.TorchFastBackend,
        "torch-bf16": torch_backends.TorchBf16Backend,
        "torch-compile": torch_backends.TorchCompileBackend,
    }
    return classes[spec.name](model)
