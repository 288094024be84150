"""Export formats by name: which graphs, in which layout, for which client."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..modeling import Sam
from .anylabeling import export_anylabeling
from .exporter import OPSET, export_onnx
from .sam import export_sam_onnx

# name -> what it writes, for `--help` and errors.
EXPORT_FORMATS = {
    "mobilesam": "folder: encoder.onnx, four-mask decoder.onnx, metadata.json (OnnxPredictor, the onnx backends)",
    "sam": "folder: encoder.onnx, SAM's single-mask decoder.onnx (segment_anything's ONNX decoder contract)",
    "anylabeling": "zip: raw-RGB encoder, single-mask decoder, their int8 twins, config.yaml "
    "(AnyLabeling, X-AnyLabeling, samexporter)",
}


def check_format(name: str) -> None:
    """Raises ValueError unless `name` is one of `EXPORT_FORMATS`."""
    if name not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {name!r}; known: {', '.join(EXPORT_FORMATS)}")


def export_model(
    model: Sam,
    out: str | Path,
    *,
    format: str = "mobilesam",
    model_name: str,
    weights: str | Path | None = None,
    quantize: str | None = None,
    calibration_images: Sequence[np.ndarray] | None = None,
    opset: int = OPSET,
) -> dict[str, Path]:
    """Export `model` in the format named `format` (see `EXPORT_FORMATS`).

    Args:
        model: The model, on CPU; it is put in eval mode.
        out: The folder to write ("mobilesam", "sam") or the zip ("anylabeling").
        format: "mobilesam" (`export_onnx`), "sam" (`export_sam_onnx`) or "anylabeling" (`export_anylabeling`).
        model_name: Registry name ("vit_t"): the mobilesam sidecar records it; the bundle is named "mobilesam_{model_name}".
        weights: Checkpoint the weights came from (mobilesam format's sidecar).
        quantize: The mobilesam format's extra encoder ("int8", "int8-static"); the
            anylabeling bundle always has its int8 twins, and the sam format has none.
        calibration_images: For "int8-static", see `export_onnx`.
        opset: ONNX opset.

    Returns:
        Role -> path written ("bundle" for the zip).

    Raises:
        ImportError: onnx or onnxruntime (or a quantiser) is not installed.
        ValueError: Unknown format, or an option the format does not take.
    """
    check_format(format)
    if format == "mobilesam":
        return export_onnx(
            model,
            out,
            model_name=model_name,
            weights=weights,
            quantize=quantize,
            calibration_images=calibration_images,
            opset=opset,
        )
    if quantize is not None or calibration_images is not None:
        raise ValueError(f"quantize and calibration_images are options of the mobilesam format, not of {format}")
    if format == "sam":
        return export_sam_onnx(model, out, opset=opset)
    return {"bundle": export_anylabeling(model, out, name=f"mobilesam_{model_name}", opset=opset)}
