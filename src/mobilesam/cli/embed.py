"""`mobilesam embed`: embed every image of a source once, into a store that later runs read."""

from __future__ import annotations

from pathlib import Path

import typer

from ..embedding_store import EmbeddingStore
from ..io.images import load_image, pixels_digest
from ..io.sources import find_jobs
from ..predictor import SamPredictor
from .common import (
    BACKEND_OPTION,
    DEVICE_OPTION,
    MAX_PIXELS_OPTION,
    MODEL_OPTION,
    ONNX_DIR_OPTION,
    QUIET_OPTION,
    THREADS_OPTION,
    batch_errors,
    choose_backend,
    fail,
    load_model,
)


def embed(
    source: str = typer.Argument(..., help="Image file, folder, glob (quote it), or a .json/.csv prompts file."),
    out: Path = typer.Option(..., "--out", "-o", help="The embedding store's folder (created if needed)."),
    model: str = MODEL_OPTION,
    half: bool = typer.Option(
        False, "--half", help="Store float16 embeddings (half the bytes); default float32, or an existing store's dtype."
    ),
    quiet: bool = QUIET_OPTION,
    device: str = DEVICE_OPTION,
    threads: int | None = THREADS_OPTION,
    backend: str = BACKEND_OPTION,
    onnx_dir: Path | None = ONNX_DIR_OPTION,
    max_pixels: int = MAX_PIXELS_OPTION,
) -> None:
    """Embed every image of a source into a store; images already stored (by their pixels) are skipped."""
    try:
        jobs = find_jobs(source, exclude=out)
    except (OSError, ValueError) as err:
        fail(err)
    sam = load_model(model, device, threads)
    chosen = choose_backend(backend, sam, onnx_dir, threads)
    try:
        # Without --half an existing store keeps its dtype, so resuming a --half run needs no flag.
        store = EmbeddingStore(out, sam, half=True if half else None)
    except (OSError, ValueError) as err:
        fail(err)
    predictor = SamPredictor(sam, chosen)
    embedded = stored = 0
    failures: list[tuple[Path, str]] = []
    with batch_errors():
        for job in jobs:
            try:
                rgb = load_image(job.path, max_pixels=max_pixels)
            except (OSError, ValueError) as err:
                failures.append((job.path, str(err)))
                continue
            digest = pixels_digest(rgb)
            if digest in store:
                stored += 1
                continue
            store.save(digest, predictor.embed(rgb))
            embedded += 1
            if not quiet:
                typer.echo(f"[{embedded + stored + len(failures)}/{len(jobs)}] embedded {job.path}", err=True)
    if not quiet:
        typer.echo(f"{embedded} embedded, {stored} already stored, {len(failures)} failed; store in {out}")
    for path, reason in failures:
        typer.echo(f"failed: {path}: {reason}", err=True)
    if failures:
        raise typer.Exit(1)
