"""`mobilesam export` and `mobilesam bench`, registered on the main app in `mobilesam.cli`."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from ..backends import BACKENDS


def export(
    model: str = typer.Option("mobile_sam.pt", "--model", "-m", help="Checkpoint path, known checkpoint name, or model name (vit_t: random weights)."),
    out: Path = typer.Option(Path("onnx"), "--out", "-o", help="Output folder for encoder.onnx, decoder.onnx and metadata.json."),
    quantize: str | None = typer.Option(None, "--quantize", help="Also write encoder.int8.onnx: int8 (onnxruntime dynamic quantisation)."),
    opset: int | None = typer.Option(None, "--opset", help="ONNX opset (default 17)."),
) -> None:
    """Export the image encoder (fixed input size) and the prompt decoder (any number of points) to ONNX."""
    from .. import cli, weights
    from .exporter import OPSET, export_onnx
    from .quantize import QUANTIZATIONS

    if quantize is not None and quantize not in QUANTIZATIONS:
        cli._fail(cli.UsageError(f"--quantize must be one of {', '.join(QUANTIZATIONS)}, got {quantize!r}"), code=2)
    sam = cli._load_model(model, "cpu", None)
    try:
        source = weights.resolve_checkpoint(model) if _names_a_file(model) else None
        paths = export_onnx(
            sam,
            out,
            model_name=weights.detect_model_name(sam.state_dict()),
            weights=source,
            quantize=quantize,
            opset=OPSET if opset is None else opset,
        )
    except (ImportError, OSError, RuntimeError, ValueError) as err:
        cli._fail(err)
    for role, path in paths.items():
        typer.echo(f"{role:13} {path} ({path.stat().st_size / 2**20:.1f} MiB)")


def bench(
    model: str = typer.Option("vit_t", "--model", "-m", help="Checkpoint path, known checkpoint name, or model name (vit_t: random weights)."),
    backend: list[str] = typer.Option(["torch-fast"], "--backend", help="Backend to time against eager torch; repeat for several: " + ", ".join(BACKENDS) + "."),
    onnx_dir: Path | None = typer.Option(None, "--onnx-dir", help="Folder from `mobilesam export` (for the onnx backends)."),
    repeats: int = typer.Option(5, "--repeats", min=1, help="Timed runs per backend; the median is shown."),
    threads: int | None = typer.Option(None, "--threads", min=1, help="CPU threads for torch and onnxruntime."),
    no_rss: bool = typer.Option(False, "--no-rss", help="Skip the peak-RSS probes (a fresh process per backend)."),
) -> None:
    """Time the encoder and the decoder per backend against eager torch (the reference's numerics), in one run."""
    from .. import bench as bench_module
    from .. import cli

    sam = cli._load_model(model, "cpu", threads)
    try:
        report = bench_module.run_benchmark(
            sam, backend, onnx_dir=onnx_dir, repeats=repeats, threads=threads, rss_model=None if no_rss else model
        )
    except (ImportError, OSError, RuntimeError, ValueError) as err:
        cli._fail(err)
    typer.echo(report)


def _names_a_file(model: str) -> bool:
    """True where `load_sam` reads weights from a file (the same test it makes), so they have a checksum."""
    from .. import weights

    return os.path.exists(model) or model in weights.KNOWN_CHECKPOINTS
