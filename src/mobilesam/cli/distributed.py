"""`--ray` of `mobilesam predict` and `everything`: the same run on a Ray cluster (`mobilesam.distributed`)."""

from __future__ import annotations

from pathlib import Path

import typer

from ..distributed import ImageRef, find_images, label
from ..errors import MobileSamError
from ..labeling import RunOptions
from ..tasks import LabelingTask
from .common import UsageError, batch_errors, check_backend_options, fail, report_batch

RAY_OPTION = typer.Option(
    None,
    "--ray",
    metavar="ADDRESS",
    help="Run on Ray (the ray extra of mobilesam): local (start a local instance), auto (join the running "
    "cluster) or the head's address (ray://head:10001). SOURCE may then be a URI (s3://bucket/photos).",
)
WORKERS_OPTION = typer.Option(
    None, "--workers", min=1, help="With --ray: model actors (default: as many as the cluster's CPUs, or GPUs, hold)."
)
THREADS_PER_WORKER_OPTION = typer.Option(1, "--threads-per-worker", min=1, help="With --ray: CPUs and threads of each actor.")
GPUS_PER_WORKER_OPTION = typer.Option(
    0.0,
    "--gpus-per-worker",
    min=0.0,
    help="With --ray: GPUs of each actor, fractions allowed (0.5: two share one); with --device cuda.",
)


def check_ray_options(
    address: str | None, threads: int | None, workers: int | None, threads_per_worker: int, gpus_per_worker: float
) -> None:
    """The --ray options given together: a worker option without --ray, or --threads with it, is a usage error."""
    if address is None and (workers is not None or threads_per_worker != 1 or gpus_per_worker != 0):
        raise UsageError("--workers, --threads-per-worker and --gpus-per-worker are for --ray runs")
    if address is not None and threads is not None:
        raise UsageError("--threads is for local runs; with --ray, give --threads-per-worker")


def find_ray_images(source: str, out: Path) -> list[ImageRef]:
    """The images of SOURCE for a Ray run (`mobilesam.distributed.find_images`); a URI without its filesystem exits 1."""
    try:
        return find_images(source, exclude=out)
    except ImportError as err:
        fail(err)


def run_on_ray(refs: list[ImageRef], task: LabelingTask, out: Path, options: RunOptions) -> None:
    """Label `refs` with `task` on the Ray cluster at `options.address`; report as a local run does (summary, failures, exit status)."""
    check_backend_options(options.backend, None if options.onnx_dir is None else Path(options.onnx_dir))
    with batch_errors():
        try:
            summary = label(refs, task, out, options)
        except (ImportError, ValueError, MobileSamError) as err:
            fail(err)
    workers = f"{', '.join(summary.backends) or options.backend} on {summary.workers} Ray workers"
    report_batch(summary, out, not options.progress, workers)
