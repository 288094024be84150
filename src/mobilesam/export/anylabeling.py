"""The `anylabeling` export format: one zip that AnyLabeling, X-AnyLabeling and samexporter load as a SAM model.

Their `segment_anything` model class (AnyLabeling 0.4.43, X-AnyLabeling 4.2.1,
samexporter 0.4.6's `SegmentAnythingONNX`) fits the image into 684x1024
itself and feeds the encoder that (H, W, 3) float32 RGB array; samexporter
0.5.0 resizes the long side to 1024 and feeds the same kind of array. So the
encoder takes ``input_image`` (H, W, 3) raw RGB with dynamic H and W and
normalises, pads and adds the batch axis in the graph; the decoder is SAM's
single-mask one, whose first output they read. They hard-code the 1024 input.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import zipfile
from pathlib import Path

import torch

from ..atomic import atomic_path, temporary_path
from ..modeling import Sam
from .exporter import OPSET, _export, _require_onnx, _smoke_run
from .quantize import quantize_dynamic_int8
from .sam import export_sam_decoder
from .wrappers import PreprocessingEncoderOnnxModel

logger = logging.getLogger(__name__)

# The apps resize to this long side themselves (`SegmentAnythingONNX.target_size`).
ANYLABELING_INPUT_SIZE = 1024
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def export_anylabeling(
    model: Sam, zip_path: str | Path, *, name: str, display_name: str | None = None, opset: int = OPSET
) -> Path:
    """Write the bundle `zip_path`: folder `name/` with config.yaml, config.quant.yaml and four graphs.

    ``config.yaml`` names ``{name}.encoder.onnx`` and ``{name}.decoder.onnx``;
    ``config.quant.yaml`` their dynamic-int8 twins ``*.quant.onnx``. Load
    either as a custom model. Every graph is checked and run once; the zip is
    written aside and renamed into place, so an existing bundle is replaced
    whole or not at all.

    Args:
        model: The model, on CPU, built for 1024x1024 inputs; it is put in eval mode.
        zip_path: The bundle to write; must end in ".zip".
        name: The model's name in the apps, and the stem of its files (letters, digits, "_", ".", "-").
        display_name: What the apps' model list shows; default "MobileSAM ({name})".
        opset: ONNX opset.

    Returns:
        The zip's path.

    Raises:
        ImportError: onnx or onnxruntime is not installed.
        ValueError: A model not built for 1024 inputs, a bad `name`, or a `zip_path` not ending in ".zip".
    """
    _require_onnx()
    target = Path(zip_path)
    if target.suffix != ".zip":
        raise ValueError(f"the anylabeling bundle is a .zip file, got {target}")
    if not _NAME.fullmatch(name):
        raise ValueError(f"bundle name must be letters, digits, '_', '.' or '-', starting with a letter or digit; got {name!r}")
    if model.img_size != ANYLABELING_INPUT_SIZE:
        raise ValueError(
            f"AnyLabeling and samexporter resize images to {ANYLABELING_INPUT_SIZE} themselves; "
            f"this model takes {model.img_size}x{model.img_size} inputs"
        )
    model = model.cpu().eval()
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = temporary_path(target.with_suffix(""))
    try:
        folder = scratch / name
        folder.mkdir(parents=True)
        _write_graphs(model, folder, name, opset)
        display = display_name or f"MobileSAM ({name})"
        _write_config(folder / "config.yaml", name, display, ".onnx")
        _write_config(folder / "config.quant.yaml", f"{name}_quant", f"{display} int8", ".quant.onnx")
        with atomic_path(target) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as bundle:
            for path in sorted(folder.iterdir()):
                bundle.write(path, f"{name}/{path.name}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    logger.info("wrote %s", target)
    return target


def _write_graphs(model: Sam, folder: Path, name: str, opset: int) -> None:
    """The fp32 encoder and single-mask decoder, then their dynamic-int8 twins, each checked and run once."""
    onnx = _require_onnx()
    encoder, decoder = folder / f"{name}.encoder.onnx", folder / f"{name}.decoder.onnx"
    # Not square, so neither side is traced as a constant equal to the other.
    example = torch.zeros(ANYLABELING_INPUT_SIZE * 2 // 3, ANYLABELING_INPUT_SIZE, 3)
    dynamic_axes = {"input_image": {0: "image_height", 1: "image_width"}}
    _export(PreprocessingEncoderOnnxModel(model), (example,), encoder, ["input_image"], ["image_embeddings"], dynamic_axes, opset)
    onnx.checker.check_model(str(encoder))
    _smoke_run(encoder, "encoder")
    export_sam_decoder(model, decoder, opset=opset)
    for graph in (encoder, decoder):
        quantized = quantize_dynamic_int8(graph, graph.with_suffix(".quant.onnx"))
        _smoke_run(quantized, f"int8 {graph.stem}")


def _write_config(path: Path, name: str, display_name: str, suffix: str) -> None:
    """The apps' model config; JSON strings are valid YAML, so no YAML writer is needed."""
    stem = path.parent.name
    fields = {
        "type": "segment_anything",
        "name": name,
        "display_name": display_name,
        "encoder_model_path": f"{stem}.encoder{suffix}",
        "decoder_model_path": f"{stem}.decoder{suffix}",
        "input_size": ANYLABELING_INPUT_SIZE,
        # The apps' own MobileSAM config: images fit in 1024x682 before the encoder.
        "max_width": 1024,
        "max_height": 682,
    }
    path.write_text("".join(f"{key}: {json.dumps(value)}\n" for key, value in fields.items()), encoding="utf-8")
