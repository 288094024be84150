"""`mobilesam export`: the encoder and decoder as ONNX graphs, in the layout a named client reads."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from ..io.images import load_image
from ..io.sources import find_jobs
from ..registry import known_checkpoints, model_name, resolve_checkpoint
from ..runtime.layout import QUANTIZATIONS
from .common import MODEL_OPTION, UsageError, fail, load_model


def export(
    model: str = MODEL_OPTION,
    out: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        help="Output folder (mobilesam, sam; default onnx/) or zip (anylabeling; default mobilesam_<model>.zip).",
    ),
    export_format: str = typer.Option(
        "mobilesam",
        "--format",
        "-f",
        help="mobilesam: encoder.onnx, four-mask decoder.onnx, metadata.json (OnnxPredictor, --backend onnx); "
        "sam: SAM's single-mask decoder contract (segment_anything's ONNX example); "
        "anylabeling: a zip for AnyLabeling, X-AnyLabeling and samexporter (config.yaml, raw-RGB encoder, int8 twins).",
    ),
    quantize: str | None = typer.Option(
        None,
        "--quantize",
        help="Also write an int8 encoder: int8 (encoder.int8.onnx, onnxruntime's dynamic quantisation; backend onnx-int8) "
        "or int8-static (encoder.int8-static.xml, OpenVINO int8 calibrated by NNCF; backend openvino-int8).",
    ),
    calibration: str | None = typer.Option(
        None, "--calibration", help="Images to calibrate int8-static on (folder or glob; default: scikit-image's sample photos)."
    ),
    opset: int | None = typer.Option(None, "--opset", help="ONNX opset (default 17)."),
) -> None:
    """Export the image encoder and the prompt decoder (any number of points) to ONNX, for the client `--format` names."""
    # Imported here: only this command needs the exporter, so the others start without it.
    from ..export import EXPORT_FORMATS, OPSET, export_model

    if export_format not in EXPORT_FORMATS:
        fail(UsageError(f"--format must be one of {', '.join(EXPORT_FORMATS)}, got {export_format!r}"), code=2)
    if quantize is not None and export_format != "mobilesam":
        fail(UsageError("--quantize is for --format mobilesam (the anylabeling zip always has its int8 graphs)"), code=2)
    if quantize is not None and quantize not in QUANTIZATIONS:
        fail(UsageError(f"--quantize must be one of {', '.join(QUANTIZATIONS)}, got {quantize!r}"), code=2)
    if calibration is not None and quantize != "int8-static":
        fail(UsageError("--calibration is for --quantize int8-static"), code=2)
    try:
        images = None if calibration is None else [load_image(job.path) for job in find_jobs(calibration)]
    except (OSError, ValueError) as err:
        fail(err)
    sam = load_model(model, "cpu", None)
    try:
        source = resolve_checkpoint(model) if _names_a_file(model) else None
        name = model_name(sam)
        if out is None:
            out = Path(f"mobilesam_{name}.zip") if export_format == "anylabeling" else Path("onnx")
        paths = export_model(
            sam,
            out,
            format=export_format,
            model_name=name,
            weights=source,
            quantize=quantize,
            calibration_images=images,
            opset=OPSET if opset is None else opset,
        )
    except (ImportError, OSError, RuntimeError, ValueError) as err:
        fail(err)
    for role, path in paths.items():
        typer.echo(f"{role:13} {path} ({path.stat().st_size / 2**20:.1f} MiB)")


def _names_a_file(model: str) -> bool:
    """True where `load_sam` reads weights from a file (the same test it makes), so they have a checksum."""
    return os.path.exists(model) or model in known_checkpoints()
