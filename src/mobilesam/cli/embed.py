"""`mobilesam embed`: embed every image of a source once, into a store that later runs read."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import typer
from tqdm import tqdm

from ..distributed import ModelSpec, embed_on_ray
from ..embedding_store import EmbeddingStore
from ..errors import MobileSamError
from ..io.images import load_image
from ..io.sources import find_jobs
from ..predictor import SamPredictor
from ..tiling import embed_into_store
from .common import (
    BACKEND_OPTION,
    DEVICE_OPTION,
    HALO_OPTION,
    MAX_PIXELS_OPTION,
    MODEL_OPTION,
    ONNX_DIR_OPTION,
    QUIET_OPTION,
    THREADS_OPTION,
    TILE_OPTION,
    UsageError,
    batch_errors,
    check_backend_options,
    choose_backend,
    fail,
    load_model,
    parse_tiling,
)
from .distributed import (
    GPUS_PER_WORKER_OPTION,
    RAY_OPTION,
    THREADS_PER_WORKER_OPTION,
    WORKERS_OPTION,
    check_ray_options,
    find_ray_images,
)


def embed(
    source: str = typer.Argument(..., help="Image file, folder, glob (quote it), or a .json/.csv prompts file."),
    out: Path = typer.Option(..., "--out", "-o", help="The embedding store's folder (created if needed)."),
    model: str = MODEL_OPTION,
    half: bool = typer.Option(
        False, "--half", help="Store float16 embeddings (half the bytes); default float32, or an existing store's dtype."
    ),
    recompute: bool = typer.Option(
        False, "--recompute", help="Embed again the images whose stored file is damaged (reads every stored file to check)."
    ),
    quiet: bool = QUIET_OPTION,
    device: str = DEVICE_OPTION,
    threads: int | None = THREADS_OPTION,
    backend: str = BACKEND_OPTION,
    onnx_dir: Path | None = ONNX_DIR_OPTION,
    max_pixels: int = MAX_PIXELS_OPTION,
    tile: int | None = TILE_OPTION,
    halo: int | None = HALO_OPTION,
    ray: str | None = RAY_OPTION,
    workers: int | None = WORKERS_OPTION,
    threads_per_worker: int = THREADS_PER_WORKER_OPTION,
    gpus_per_worker: float = GPUS_PER_WORKER_OPTION,
) -> None:
    """Embed every image of a source into a store; images already stored (by their pixels) are skipped.

    With --tile, each image's windows are stored (each by its own pixels), as `predict --tile` reads them.
    """
    try:
        tile_shape, halo = parse_tiling(tile, halo)
        check_ray_options(ray, threads, workers, threads_per_worker, gpus_per_worker)
        jobs = find_jobs(source, exclude=out) if ray is None else find_ray_images(source, out)
    except UsageError as err:
        fail(err, code=2)
    except (OSError, ValueError) as err:
        fail(err)
    if ray is not None:
        check_backend_options(backend, onnx_dir)
        spec = ModelSpec(model, backend, None if onnx_dir is None else str(onnx_dir), device)
        with batch_errors():
            try:
                summary = embed_on_ray(
                    jobs,
                    out,
                    spec,
                    half=half,
                    address=ray,
                    workers=workers,
                    threads_per_worker=threads_per_worker,
                    gpus_per_worker=gpus_per_worker,
                    progress=not quiet,
                    max_pixels=max_pixels,
                    tile_shape=tile_shape,
                    halo=halo,
                    recompute=recompute,
                )
            except (ImportError, ValueError, MobileSamError) as err:
                fail(err)
        on_ray = f"; {', '.join(summary.backends) or backend} on {summary.workers} Ray workers"
        _report(summary.embedded, summary.stored, summary.failures, out, quiet, on_ray)
        return
    sam = load_model(model, device, threads)
    try:
        # Without --half an existing store keeps its dtype, so resuming a --half run needs no flag.
        store = EmbeddingStore(out, sam, half=True if half else None, recompute=recompute)
    except (OSError, ValueError) as err:
        fail(err)
    predictor = SamPredictor(sam, choose_backend(backend, sam, onnx_dir, threads), store)
    embedded = stored = 0
    failures: list[tuple[Path, str]] = []
    with batch_errors(), tqdm(jobs, unit="img", disable=quiet, dynamic_ncols=True) as bar:
        for job in bar:
            try:
                rgb = load_image(job.path, max_pixels=max_pixels)
            except (OSError, ValueError) as err:
                failures.append((job.path, str(err)))
                continue
            if embed_into_store(predictor, rgb, tile_shape, halo):
                embedded += 1
            else:
                stored += 1
            bar.set_postfix(embedded=embedded, stored=stored, failed=len(failures), refresh=False)
    _report(embedded, stored, failures, out, quiet)


def _report(embedded: int, stored: int, failures: Sequence[tuple[object, str]], out: Path, quiet: bool, where: str = "") -> None:
    """The summary line (unless --quiet) and each failure on stderr; exit 1 if any image failed."""
    if not quiet:
        typer.echo(f"{embedded} embedded, {stored} already stored, {len(failures)} failed; store in {out}{where}")
    for path, reason in failures:
        typer.echo(f"failed: {path}: {reason}", err=True)
    if failures:
        raise typer.Exit(1)
