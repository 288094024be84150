"""`mobilesam export`: the encoder and decoder as graphs for a runtime (ONNX, OpenVINO, the phone runtimes) or a client."""

from __future__ import annotations

from pathlib import Path

import typer

from ..io.images import load_image
from ..io.sources import find_jobs
from ..registry import model_name, weights_file
from .common import MODEL_OPTION, UsageError, fail, load_model


def export(
    model: str = MODEL_OPTION,
    out: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        help="Output folder (or zip for anylabeling); default: onnx/ for onnx and sam, mobilesam_<model>.zip for anylabeling, "
        "mobilesam_<model>_<format>/ for the others.",
    ),
    export_format: str = typer.Option(
        "onnx",
        "--format",
        "-f",
        help="onnx (alias mobilesam): encoder.onnx, four-mask decoder.onnx, metadata.json (OnnxPredictor, --backend onnx); "
        "sam: SAM's single-mask decoder contract (segment_anything's ONNX example); "
        "anylabeling: a zip for AnyLabeling, X-AnyLabeling and samexporter; openvino: OpenVINO IR; "
        "phone runtimes: executorch (.pte, XNNPACK), tflite (LiteRT), coreml (.mlpackage), ncnn; torchscript; "
        "web: the click-to-segment page as static files, running both graphs in the browser (onnxruntime-web).",
    ),
    quantize: str | None = typer.Option(
        None,
        "--quantize",
        help="Also write a reduced-precision encoder. onnx: int8 (onnxruntime's dynamic int8; backend onnx-int8) or "
        "int8-static (OpenVINO int8 calibrated by NNCF; backend openvino-int8); executorch: int8 (XNNPACK PT2E); "
        "tflite: fp16 or int8.",
    ),
    calibration: str | None = typer.Option(
        None, "--calibration", help="Images to calibrate int8-static on (folder or glob; default: scikit-image's sample photos)."
    ),
    opset: int | None = typer.Option(None, "--opset", help="ONNX opset for onnx, sam and anylabeling (default 17)."),
) -> None:
    """Export the image encoder and the prompt decoder for the runtime or client `--format` names."""
    # Imported here: only this command needs the exporter, so the others start without it.
    from ..export import FORMATS, export_model
    from ..export import export_format as format_row

    try:
        row = format_row(export_format)
    except ValueError:
        fail(UsageError(f"--format must be one of {', '.join(FORMATS)}, got {export_format!r}"), code=2)
    if quantize is not None and quantize not in row.quantize:
        takes = f"one of {', '.join(row.quantize)}" if row.quantize else "not taken"
        fail(UsageError(f"--quantize for --format {row.name} is {takes}, got {quantize!r}"), code=2)
    if calibration is not None and quantize != "int8-static":
        fail(UsageError("--calibration is for --quantize int8-static"), code=2)
    if opset is not None and "opset" not in row.options:
        fail(UsageError(f"--opset is for the ONNX formats, not {row.name}"), code=2)
    try:
        images = None if calibration is None else [load_image(job.path) for job in find_jobs(calibration)]
    except (OSError, ValueError) as err:
        fail(err)
    sam = load_model(model, "cpu", None)
    options: dict[str, object] = {}
    if opset is not None:
        options["opset"] = opset
    if images is not None:
        options["calibration_images"] = images
    try:
        source = weights_file(model)
        paths = export_model(sam, out, format=row.name, model_name=model_name(sam), weights=source, quantize=quantize, **options)
    except (ImportError, OSError, RuntimeError, ValueError) as err:
        fail(err)
    for role, path in paths.items():
        typer.echo(f"{role:14} {path} ({_size(path) / 2**20:.1f} MiB)")


def _size(path: Path) -> int:
    """Bytes in a file, or in a folder (an .mlpackage) and everything under it."""
    if path.is_dir():
        return sum(item.stat().st_size for item in path.rglob("*") if item.is_file())
    return path.stat().st_size
