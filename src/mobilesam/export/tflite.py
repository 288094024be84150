"""The `tflite` export format: LiteRT (TensorFlow Lite) flatbuffers of the phone graphs, converted by litert-torch.

Converter: litert-torch (Google's PyTorch -> LiteRT converter, torch.export based),
chosen over ONNX -> onnx2tf because onnx2tf needs TensorFlow, whose install would
take numpy back to 1.26 and protobuf, onnx, onnxruntime and ai-edge-litert to older
releases. litert-torch 0.10 runs on torch 2.14 as is; its converter's pins
(xdsl 0.28, hence typing-extensions < 4.13) are install-time only: conversion runs
with typing-extensions 4.16.

What is written (`export_tflite`):

- encoder.tflite: `export.mobile.PixelEncoder`, static (1, S, S, 3) input.
- decoder.tflite, decoder_single.tflite: `export.mobile.LowResDecoder` (four masks,
  SAM's single-mask choice), one prompt per run, one signature per point count N:
  "points_1", "points_2", ... litert-torch 0.10 lowers elementwise ops through JAX,
  which needs static shapes, so a graph with a dynamic N does not convert, and a
  static graph cannot be resized (its reshapes keep N). Padding to a fixed N with
  label -1 points is not an option: SAM's transformer attends to padding points,
  so the masks would change. The signatures share the weights (each adds ~0.2 MB).
- encoder.fp16.tflite (`quantize="fp16"`): fp16 weights, fp32 compute (ai-edge-quantizer's
  float casting: the interpreter dequantises the weights once, at load).
- encoder.int8.tflite (`quantize="int8"`): dynamic-range int8 (ai-edge-quantizer's
  `dynamic_wi8_afp32`: per-channel int8 weights, activations quantised at run time);
  full int8 would need calibration images and int8 inputs, so it is not offered.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..atomic import write_bytes_atomic
from ..modeling import Sam
from ..runtime.layout import graph_entry
from .check import run_once
from .mobile import (
    DECODER_INPUTS,
    DECODER_OUTPUTS,
    ENCODER_INPUTS,
    ENCODER_OUTPUTS,
    LowResDecoder,
    PixelEncoder,
    example_inputs,
    mobile_graphs,
)
from .sidecar import write_phone_sidecar

FILES = {
    "encoder": "encoder.tflite",
    "decoder": "decoder.tflite",
    "decoder_single": "decoder_single.tflite",
    "encoder.fp16": "encoder.fp16.tflite",
    "encoder.int8": "encoder.int8.tflite",
}
# Point counts N (clicks, box corners and the padding point of one prompt) the decoders take: a click is
# N = 2, a box 2, a box and a click 3, k clicks k + 1.
DEFAULT_POINTS = tuple(range(1, 9))
# The decoders' signature for N points; the encoder has litert-torch's default one.
DECODER_SIGNATURE = "points_{}"
ENCODER_SIGNATURE = "serving_default"
# The reduced-precision encoders `quantize` adds, and what each is (for the sidecar).
QUANTIZE_RECIPES = {
    "fp16": "fp16 weights, fp32 compute (ai-edge-quantizer float casting)",
    "int8": "dynamic-range int8: per-channel int8 weights, activations quantised at run time (dynamic_wi8_afp32)",
}


class _NamedOutputs(nn.Module):
    """`module`'s outputs as a dict, so the LiteRT signature names them (litert-torch names outputs by dict key)."""

    # Not `graph`: torch.export's unlifted module has a `graph` of its own.
    def __init__(self, module: nn.Module, outputs: tuple[str, ...]) -> None:
        super().__init__()
        self.module = module
        self.outputs = outputs

    def forward(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        found = self.module(**inputs)
        return dict(zip(self.outputs, (found,) if isinstance(found, torch.Tensor) else found, strict=True))


def export_tflite(
    model: Sam,
    out: str | Path,
    *,
    model_name: str,
    weights: str | Path | None = None,
    quantize: str | None = None,
    points: Sequence[int] = DEFAULT_POINTS,
) -> dict[str, Path]:
    """Write `model`'s phone graphs as LiteRT flatbuffers into folder `out`, with a sidecar, and run them once.

    Args:
        model: The model, on CPU; it is put in eval mode.
        out: The folder to write.
        model_name: Registry name ("vit_t"), recorded in the sidecar.
        weights: Checkpoint the weights came from (its hash goes into the sidecar).
        quantize: "fp16" or "int8" to add `encoder.fp16.tflite` or `encoder.int8.tflite` beside the fp32 one.
        points: The point counts N the decoders take, one signature each (`DEFAULT_POINTS`: 1 to 8).

    Returns:
        Role ("encoder", "decoder", "decoder_single", "encoder.fp16" or "encoder.int8", "metadata") -> path.

    Raises:
        ImportError: litert-torch (or ai-edge-quantizer, for `quantize`) is not installed.
        ValueError: Unknown `quantize`, or `points` without 2.
    """
    if quantize is not None and quantize not in QUANTIZE_RECIPES:
        raise ValueError(f"unknown tflite quantisation {quantize!r}; known: {', '.join(QUANTIZE_RECIPES)}")
    points = tuple(sorted(set(points)))
    # 2 is a click (with its padding point) or a box: the commonest prompts, and the one `run_once` checks with.
    if 2 not in points or points[0] < 1:
        raise ValueError(f"points must be point counts >= 1 that include 2, got {points}")
    try:
        import litert_torch
    except ImportError as err:
        raise ImportError(f"the tflite format needs litert-torch: pip install 'mobilesam[tflite]' ({err})") from None
    model = model.eval()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    encoder_inputs = example_inputs(model)["encoder"]
    encoder = litert_torch.convert(
        _NamedOutputs(PixelEncoder(model), ENCODER_OUTPUTS).eval(), sample_kwargs=dict(zip(ENCODER_INPUTS, encoder_inputs))
    )
    paths = {"encoder": write_bytes_atomic(out / FILES["encoder"], encoder.model_content())}
    for role, single in (("decoder", False), ("decoder_single", True)):
        paths[role] = write_bytes_atomic(out / FILES[role], _convert_decoder(litert_torch, model, single, points))
    graphs = mobile_graphs(FILES["encoder"], FILES["decoder"], FILES["decoder_single"], batch=1)
    facts: dict[str, Any] = {"litert_torch": litert_torch.__version__, "decoder_points": list(points)}
    if quantize is not None:
        role = f"encoder.{quantize}"
        paths[role] = write_bytes_atomic(out / FILES[role], quantize_encoder(paths["encoder"], quantize))
        graphs[role] = graph_entry(FILES[role], ENCODER_INPUTS, ENCODER_OUTPUTS, layout="pixels")
        facts["quantization"] = {role: QUANTIZE_RECIPES[quantize]}
        facts["ai_edge_quantizer"] = version("ai-edge-quantizer")
    paths["metadata"] = write_phone_sidecar(
        out,
        model,
        export_format="tflite",
        model_name=model_name,
        weights=weights,
        graphs=graphs,
        signatures={"encoder": ENCODER_SIGNATURE, "decoder": DECODER_SIGNATURE.format("<N>")},
        **facts,
    )
    run_once(out)
    if quantize is not None:
        run_once(out, variant=quantize)
    return paths


def _convert_decoder(litert_torch: Any, model: Sam, single: bool, points: tuple[int, ...]) -> bytes:
    """One flatbuffer holding the decoder for each point count, a signature each (they share the weights)."""
    decoder = _NamedOutputs(LowResDecoder(model, single_mask=single), DECODER_OUTPUTS).eval()
    converter = litert_torch.Converter()
    for count in points:
        inputs = example_inputs(model, num_points=count)["decoder"]
        converter.signature(DECODER_SIGNATURE.format(count), decoder, sample_kwargs=dict(zip(DECODER_INPUTS, inputs)))
    return converter.convert().model_content()


def quantize_encoder(encoder: Path, quantize: str) -> bytes:
    """The fp32 `encoder` flatbuffer with fp16 or dynamic-range int8 weights (`QUANTIZE_RECIPES`).

    Raises:
        ImportError: ai-edge-quantizer is not installed.
    """
    try:
        from ai_edge_quantizer import algorithm_manager, qtyping, recipe
        from ai_edge_quantizer.quantizer import Quantizer
    except ImportError as err:
        raise ImportError(f"tflite quantisation needs ai-edge-quantizer: pip install 'mobilesam[tflite]' ({err})") from None
    quantizer = Quantizer(str(encoder))
    if quantize == "fp16":
        quantizer.add_weight_only_config(
            regex=".*",
            operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
            num_bits=16,
            algorithm_key=algorithm_manager.AlgorithmName.FLOAT_CASTING,
        )
    else:
        quantizer.load_quantization_recipe(recipe.dynamic_wi8_afp32())
    return bytes(quantizer.quantize(enable_progress_report=False).quantized_model)
