"""The `sam` export format: SAM's own ONNX decoder contract (`segment_anything.utils.onnx`), one mask per prompt."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from ..modeling import Sam
from ..runtime.layout import DECODER_FILE, ENCODER_FILE, METADATA_FILE
from .exporter import OPSET, _decoder_example, _export, _require_onnx, _smoke_run
from .wrappers import EncoderOnnxModel, SamOnnxModel

SAM_DECODER_INPUTS = ["image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input", "orig_im_size"]


def export_sam_decoder(
    model: Sam,
    path: str | Path,
    *,
    return_single_mask: bool = True,
    use_stability_score: bool = False,
    return_extra_metrics: bool = False,
    opset: int = OPSET,
) -> Path:
    """Write `SamOnnxModel(model, ...)` to `path` (atomically), check it, and run it once in onnxruntime.

    Inputs are SAM's six; outputs masks, iou_predictions, low_res_masks (with
    `return_extra_metrics`: masks, iou_predictions, stability_scores, areas,
    low_res_masks). The number of prompts and of points are dynamic.

    Raises:
        ImportError: onnx or onnxruntime is not installed.
    """
    onnx = _require_onnx()
    path = Path(path)
    model = model.cpu().eval()
    with torch.no_grad():
        embedding = model.image_encoder(torch.zeros(1, 3, model.img_size, model.img_size))
    outputs = ["masks", "iou_predictions", "low_res_masks"]
    if return_extra_metrics:
        outputs[2:2] = ["stability_scores", "areas"]
    dynamic_axes = {
        "point_coords": {0: "num_prompts", 1: "num_points"},
        "point_labels": {0: "num_prompts", 1: "num_points"},
        "mask_input": {0: "num_prompts"},
        "masks": {0: "num_prompts", 1: "num_masks", 2: "height", 3: "width"},
        **{name: {0: "num_prompts", 1: "num_masks"} for name in outputs[1:]},
    }
    wrapper = SamOnnxModel(model, return_single_mask, use_stability_score, return_extra_metrics)
    with warnings.catch_warnings():
        # The exporter warns that negative indices would break the mask selection; ours are arange and argmax.
        warnings.filterwarnings("ignore", message="Exporting aten::index operator of advanced indexing")
        _export(wrapper, _decoder_example(model, embedding), path, SAM_DECODER_INPUTS, outputs, dynamic_axes, opset)
    onnx.checker.check_model(str(path))
    _smoke_run(path, "decoder")
    return path


def export_sam_onnx(model: Sam, out_dir: str | Path, *, opset: int = OPSET) -> dict[str, Path]:
    """The `sam` format: encoder.onnx (as `export_onnx` writes it) and SAM's single-mask decoder.onnx.

    The decoder is what `segment_anything`'s `scripts/export_onnx_model.py
    --return-single-mask` writes, so SAM's notebook `onnx_model_example.ipynb`
    and other clients of SAM's decoder run it unchanged.

    Args:
        model: The model, on CPU; it is put in eval mode.
        out_dir: Folder to write into (created if needed; files are replaced atomically).
        opset: ONNX opset.

    Returns:
        Role ("encoder", "decoder") -> path.

    Raises:
        ImportError: onnx or onnxruntime is not installed.
        ValueError: `out_dir` holds a `mobilesam` export, whose four-mask decoder.onnx this would replace.
    """
    onnx = _require_onnx()
    out = Path(out_dir)
    if (out / METADATA_FILE).exists():
        raise ValueError(
            f"{out} holds a mobilesam export ({METADATA_FILE}); the sam format would replace its four-mask "
            f"{DECODER_FILE} with a single-mask one: choose another folder"
        )
    out.mkdir(parents=True, exist_ok=True)
    model = model.cpu().eval()
    paths = {"encoder": out / ENCODER_FILE, "decoder": out / DECODER_FILE}
    image = torch.zeros(1, 3, model.img_size, model.img_size)
    _export(EncoderOnnxModel(model), (image,), paths["encoder"], ["image"], ["image_embeddings"], {}, opset)
    onnx.checker.check_model(str(paths["encoder"]))
    _smoke_run(paths["encoder"], "encoder")
    export_sam_decoder(model, paths["decoder"], opset=opset)
    return paths
