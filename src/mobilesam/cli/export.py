"""`mobilesam export`: the encoder and decoder as ONNX graphs, optionally int8."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from .. import weights
from ..registry import detect_model_name
from .common import MODEL_OPTION, UsageError, fail, load_model


def export(
    model: str = MODEL_OPTION,
    out: Path = typer.Option(Path("onnx"), "--out", "-o", help="Output folder for encoder.onnx, decoder.onnx and metadata.json."),
    quantize: str | None = typer.Option(None, "--quantize", help="Also write encoder.int8.onnx: int8 (onnxruntime dynamic quantisation)."),
    opset: int | None = typer.Option(None, "--opset", help="ONNX opset (default 17)."),
) -> None:
    """Export the image encoder (fixed input size) and the prompt decoder (any number of points) to ONNX."""
    # Imported here: only this command needs the exporter, so the others start without it.
    from ..export import OPSET, QUANTIZATIONS, export_onnx

    if quantize is not None and quantize not in QUANTIZATIONS:
        fail(UsageError(f"--quantize must be one of {', '.join(QUANTIZATIONS)}, got {quantize!r}"), code=2)
    sam = load_model(model, "cpu", None)
    try:
        source = weights.resolve_checkpoint(model) if _names_a_file(model) else None
        paths = export_onnx(
            sam,
            out,
            model_name=detect_model_name(sam.state_dict()),
            weights=source,
            quantize=quantize,
            opset=OPSET if opset is None else opset,
        )
    except (ImportError, OSError, RuntimeError, ValueError) as err:
        fail(err)
    for role, path in paths.items():
        typer.echo(f"{role:13} {path} ({path.stat().st_size / 2**20:.1f} MiB)")


def _names_a_file(model: str) -> bool:
    """True where `load_sam` reads weights from a file (the same test it makes), so they have a checksum."""
    return os.path.exists(model) or model in weights.KNOWN_CHECKPOINTS
