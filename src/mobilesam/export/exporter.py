"""Write the encoder and decoder of a `Sam` as ONNX graphs, check them, and describe them in a sidecar."""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_path, write_text_atomic
from ..modeling import Sam
from ..runtime.layout import DECODER_FILE, ENCODER_FILE, METADATA_FILE, check_quantization
from ..runtime.onnxruntime import onnxruntime_session
from ..weights import sha256_file
from .quantize import write_quantized_encoder
from .sidecar import base_metadata
from .wrappers import DecoderOnnxModel, EncoderOnnxModel

logger = logging.getLogger(__name__)

# 17: LayerNormalization is a single op; onnxruntime >= 1.18 runs it everywhere.
OPSET = 17


def export_onnx(
    model: Sam,
    out_dir: str | Path,
    *,
    model_name: str,
    weights: str | Path | None = None,
    quantize: str | None = None,
    calibration_images: Sequence[np.ndarray] | None = None,
    opset: int = OPSET,
) -> dict[str, Path]:
    """Export `model` to `out_dir`: encoder.onnx, decoder.onnx, metadata.json, and a quantised encoder if asked.

    Each graph passes `onnx.checker` and runs once in onnxruntime before this returns.

    Args:
        model: The model, on CPU; it is put in eval mode.
        out_dir: Folder to write into (created if needed; files are replaced atomically).
        model_name: Registry name ("vit_t"), recorded in the sidecar.
        weights: Checkpoint the weights came from, whose SHA-256 goes into the
            sidecar; None for random weights.
        quantize: None; "int8": also write a dynamically quantised encoder (onnxruntime);
            "int8-static": also write an OpenVINO int8 encoder calibrated on `calibration_images`.
        calibration_images: (H, W, 3) uint8 RGB photos for "int8-static"; None: scikit-image's.
        opset: ONNX opset.

    Returns:
        Role ("encoder", "decoder", "encoder_int8", "metadata") -> path.

    Raises:
        ImportError: onnx or onnxruntime is not installed (for "int8-static": openvino or nncf).
        ValueError: Unknown `quantize`.
    """
    check_quantization(quantize)
    onnx = _require_onnx()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = model.cpu().eval()
    side = model.img_size
    image = torch.randn(1, 3, side, side)
    with torch.no_grad():
        embedding = model.image_encoder(image)
    paths = {"encoder": out / ENCODER_FILE, "decoder": out / DECODER_FILE}
    _export(EncoderOnnxModel(model), (image,), paths["encoder"], ["image"], ["image_embeddings"], {}, opset)
    _export(
        DecoderOnnxModel(model),
        _decoder_example(model, embedding),
        paths["decoder"],
        ["image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input", "orig_im_size"],
        ["masks", "iou_predictions", "low_res_masks"],
        {
            "point_coords": {0: "num_prompts", 1: "num_points"},
            "point_labels": {0: "num_prompts", 1: "num_points"},
            "mask_input": {0: "num_prompts"},
            "masks": {0: "num_prompts", 2: "height", 3: "width"},
            "iou_predictions": {0: "num_prompts"},
            "low_res_masks": {0: "num_prompts"},
        },
        opset,
    )
    for role, path in paths.items():
        onnx.checker.check_model(str(path))
        _smoke_run(path, role)
    metadata = {
        **base_metadata(model, model_name, weights),
        "format": "onnx",
        "opset": opset,
        "quantize": [],
        "files": {role: {"file": path.name, "sha256": sha256_file(path)} for role, path in paths.items()},
        "onnx": onnx.__version__,
    }
    paths["metadata"] = write_text_atomic(out / METADATA_FILE, json.dumps(metadata, indent=2) + "\n")
    if quantize is not None:
        paths[f"encoder_{quantize}"] = write_quantized_encoder(out, quantize, calibration_images)
    return paths


def _decoder_example(model: Sam, embedding: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Example inputs with 2 prompts of 3 points so neither dimension is traced as a constant 1."""
    side = model.img_size
    generator = torch.Generator().manual_seed(0)
    coords = torch.rand(2, 3, 2, generator=generator) * side
    labels = torch.tensor([[1.0, 0.0, -1.0], [1.0, 2.0, 3.0]])
    mask_size = model.prompt_encoder.mask_input_size
    mask_input = torch.randn(2, 1, *mask_size, generator=generator)
    return embedding, coords, labels, mask_input, torch.tensor([1.0]), torch.tensor([480.0, 640.0])


def _export(
    module: torch.nn.Module,
    args: tuple[torch.Tensor, ...],
    path: Path,
    input_names: list[str],
    output_names: list[str],
    dynamic_axes: dict[str, dict[int, str]],
    opset: int,
) -> None:
    # The exporter restores the wrapper's training flag afterwards, recursively: a fresh
    # wrapper is in training mode and would leave the model's BatchNorms in it.
    module.eval()
    with atomic_path(path) as tmp, warnings.catch_warnings():
        # The tracer warns about every Python int it freezes; the sizes it freezes here are fixed by design.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # The exporter notes each strided Slice it leaves unfolded; onnxruntime folds them itself.
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")
        # We choose the TorchScript exporter on purpose: it gives one graph with the
        # dynamic prompt axes and matches torch to 1e-5; torch deprecates it in favour of dynamo.
        warnings.filterwarnings("ignore", message="You are using the legacy TorchScript-based ONNX export")
        # The same exporter's logging setup warns that it is deprecated, once per graph.
        warnings.filterwarnings("ignore", message="The feature will be removed", category=DeprecationWarning)
        torch.onnx.export(
            module,
            args,
            str(tmp),
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            dynamo=False,
        )
    logger.info("wrote %s", path)


def _smoke_run(path: Path, role: str) -> None:
    """Run the graph once in onnxruntime on inputs of the declared shapes, so a broken file fails now."""
    session = onnxruntime_session(path)
    feeds = {}
    for node in session.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in node.shape]
        feeds[node.name] = np.zeros(shape, dtype=np.float32)
    if "orig_im_size" in feeds:
        feeds["orig_im_size"] = np.array([100.0, 200.0], dtype=np.float32)
    outputs = session.run(None, feeds)
    if not all(np.isfinite(o).all() for o in outputs):
        raise RuntimeError(f"the exported {role} graph {path} gives non-finite outputs on zero inputs")


def _require_onnx():
    try:
        import onnx
        import onnxruntime  # noqa: F401 - checked here so export fails before writing anything
    except ImportError as err:
        raise ImportError(f"ONNX export needs onnx and onnxruntime: pip install 'mobilesam[onnx]' ({err})") from None
    return onnx
