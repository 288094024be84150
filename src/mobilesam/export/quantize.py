"""int8 encoders beside an export's fp32 graph: onnxruntime's dynamic int8, and OpenVINO's int8 calibrated by NNCF."""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..atomic import atomic_path, temporary_path, write_text_atomic
from ..io.samples import calibration_photos
from ..runtime.layout import ENCODER_FILE, METADATA_FILE, QUANTIZED_ENCODER_FILES, check_quantization, find_graphs
from ..runtime.onnxruntime import OnnxRuntimeSessions
from ..runtime.openvino import OpenVinoSessions
from ..transforms import ResizeLongestSide, normalize_and_pad
from ..weights import sha256_file

logger = logging.getLogger(__name__)


def write_quantized_encoder(folder: Path, quantize: str, images: Sequence[np.ndarray] | None = None) -> Path:
    """Write the `quantize` encoder into export `folder` and record it in the sidecar.

    Args:
        folder: Written by `export_onnx` (its fp32 encoder and sidecar are read).
        quantize: "int8" (onnxruntime, dynamic) or "int8-static" (OpenVINO, calibrated).
        images: (H, W, 3) uint8 RGB photos to calibrate "int8-static" on, like those it will
            segment; None: scikit-image's photos (`io.samples`). Unused by "int8".

    Returns:
        The quantised encoder's path.

    Raises:
        ValueError: Unknown `quantize`, or no calibration images.
        ImportError: The quantiser is not installed (onnxruntime; openvino and nncf).
    """
    check_quantization(quantize)
    metadata = json.loads((folder / METADATA_FILE).read_text())
    source, target = folder / ENCODER_FILE, folder / QUANTIZED_ENCODER_FILES[quantize]
    if quantize == "int8":
        quantize_dynamic_int8(source, target)
    else:
        quantize_static_int8(source, target, calibration_inputs(metadata, images))
    _check_runs(folder, quantize, int(metadata["image_size"]))
    metadata["quantize"] = sorted({*metadata.get("quantize", []), quantize})
    metadata["files"][f"encoder_{quantize}"] = {"file": target.name, "sha256": sha256_file(target)}
    write_text_atomic(folder / METADATA_FILE, json.dumps(metadata, indent=2) + "\n")
    return target


def _check_runs(folder: Path, quantize: str, image_size: int) -> None:
    """Run the quantised encoder once, in the runtime that reads it, so a broken file fails now."""
    graphs = find_graphs(folder, quantize)
    # An .xml is an OpenVINO IR, which only OpenVINO reads.
    sessions = OpenVinoSessions(graphs, threads=1) if graphs.encoder.suffix == ".xml" else OnnxRuntimeSessions(graphs, threads=1)
    image_embeddings = sessions.embed(np.zeros((1, 3, image_size, image_size), np.float32))
    if not np.isfinite(image_embeddings).all():
        raise RuntimeError(f"the {quantize} encoder in {folder} gives non-finite embeddings on a zero image")


def quantize_dynamic_int8(source: Path, target: Path) -> Path:
    """Dynamic int8 quantisation: int8 weights of MatMul/Gemm, activations quantised at run time.

    Convolutions stay fp32 (dynamic quantisation has no int8 conv on CPU).

    Raises:
        ImportError: onnxruntime is not installed.
    """
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as err:
        raise ImportError(f"int8 quantisation needs onnxruntime: pip install 'mobilesam[onnx]' ({err})") from None
    with atomic_path(target) as tmp:
        quantize_dynamic(source, tmp, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])
    logger.info("wrote %s", target)
    return target


def quantize_static_int8(source: Path, target: Path, inputs: list[np.ndarray]) -> Path:
    """Static int8 quantisation with NNCF: activation ranges measured on `inputs`, written as an OpenVINO IR.

    Args:
        source: fp32 ONNX encoder.
        target: `.xml` path; its weights go to the `.bin` beside it.
        inputs: (1, 3, S, S) float32 model inputs to calibrate on.

    Raises:
        ImportError: openvino or nncf is not installed.
    """
    try:
        import nncf
        import openvino as ov
    except ImportError as err:
        raise ImportError(f"calibrated int8 needs openvino and nncf: pip install 'mobilesam[openvino]' ({err})") from None
    quantized = nncf.quantize(
        ov.Core().read_model(source),
        nncf.Dataset(inputs),
        model_type=nncf.ModelType.TRANSFORMER,
        subset_size=len(inputs),
    )
    # An IR is two files; both are written aside, and the .xml (what readers look for) is moved in last.
    scratch = temporary_path(target)
    try:
        scratch.mkdir()
        ov.save_model(quantized, scratch / target.name)
        os.replace(scratch / target.with_suffix(".bin").name, target.with_suffix(".bin"))
        os.replace(scratch / target.name, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    logger.info("wrote %s", target)
    return target


def calibration_inputs(metadata: dict, images: Sequence[np.ndarray] | None) -> list[np.ndarray]:
    """Model inputs made from `images` (default: `io.samples.calibration_photos`) with the export's own pre-processing.

    Raises:
        ValueError: No images, or one that is not (H, W, 3) uint8.
    """
    photos = list(calibration_photos() if images is None else images)
    if not photos:
        raise ValueError("calibrating int8 needs at least one image")
    preprocessing = metadata["preprocessing"]
    transform = ResizeLongestSide(int(metadata["image_size"]))
    inputs = []
    for index, photo in enumerate(photos):
        if photo.dtype != np.uint8 or photo.ndim != 3 or photo.shape[2] != 3:
            raise ValueError(f"calibration image {index} must be (H, W, 3) uint8 RGB, got {photo.dtype} {photo.shape}")
        rgb = photo[..., ::-1] if preprocessing["image_format"] == "BGR" else photo
        resized = transform.apply_image(np.ascontiguousarray(rgb))
        inputs.append(
            normalize_and_pad(resized, preprocessing["pixel_mean"], preprocessing["pixel_std"], transform.target_length)
        )
    return inputs
