"""`mobilesam bench`: encoder and decoder times per backend against eager torch."""

from __future__ import annotations

from pathlib import Path

import typer

from ..backends import BACKENDS
from .common import fail, load_model


def bench(
    model: str = typer.Option(
        "vit_t", "--model", "-m", help="Checkpoint path, known checkpoint name, or model name (vit_t: random weights)."
    ),
    backend: list[str] = typer.Option(
        ["torch-fast"], "--backend", help="Backend to time against eager torch; repeat for several: " + ", ".join(BACKENDS) + "."
    ),
    onnx_dir: Path | None = typer.Option(
        None, "--onnx-dir", help="Folder from `mobilesam export` for the onnx/openvino backends (default: the export cache)."
    ),
    repeats: int = typer.Option(5, "--repeats", min=1, help="Timed runs per backend; the median is shown."),
    threads: int | None = typer.Option(None, "--threads", min=1, help="CPU threads for torch and onnxruntime."),
    no_rss: bool = typer.Option(False, "--no-rss", help="Skip the peak-RSS probes (a fresh process per backend)."),
) -> None:
    """Time the encoder and the decoder per backend against eager torch (the reference's numerics), in one run."""
    # Imported here: only this command needs the benchmark harness, so the others start without it.
    from ..bench import run_benchmark

    sam = load_model(model, "cpu", threads)
    try:
        report = run_benchmark(
            sam, backend, onnx_dir=onnx_dir, repeats=repeats, threads=threads, rss_model=None if no_rss else model
        )
    except (ImportError, OSError, RuntimeError, ValueError) as err:
        fail(err)
    typer.echo(report)
