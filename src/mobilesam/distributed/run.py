"""The driver of a Ray run: image references in, one Ray Data pipeline of `Labeler` actors, a summary out."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import pickle
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from tqdm import tqdm

from ..backends import Backend
from ..io.sources import ImageJob
from ..labeling import RunOptions, RunSummary, run_frame
from ..modeling import Sam
from ..tasks import LabelingTask
from .refs import ImageRef, find_images
from .worker import Labeler, ModelSpec

# A block is one actor task. Small blocks keep the actors evenly busy and bound what a retry redoes;
# enough rows per block keep a million images to some thousands of blocks, which the driver makes quickly.
_MAX_ROWS_PER_BLOCK = 64
_BLOCKS_PER_WORKER = 16
# Our progress bar replaces Ray Data's; its news ("execution finished") and its progress module's one
# warning (that its bars are off) would interleave with ours.
_RAY_DATA_LOG_LEVELS = {"ray.data": logging.WARNING, "ray.data._internal.progress": logging.ERROR}
_ERROR_LINE = re.compile(r"[A-Za-z_][\w.]*(Error|Exception)\b.*:")


@dataclass
class RaySummary(RunSummary):
    """A `RunSummary` of a Ray run.

    Attributes:
        workers: Actors that ran the model (no more than there were images to do).
        backends: The backends they ran, sorted; more than one if "auto" chose differently on different machines.
    """

    workers: int = 0
    backends: list[str] = field(default_factory=list)


def label(
    source: str | os.PathLike[str] | Sequence[ImageRef | ImageJob],
    task: LabelingTask,
    out_dir: str | os.PathLike[str],
    options: RunOptions = RunOptions(),
) -> RaySummary:
    """Label images on a Ray cluster, as `mobilesam.labeling.label_images` does on one machine.

    The outputs are the local run's, file for file, inside the same run frame
    (`mobilesam.labeling.run_frame`): images whose outputs all exist are
    skipped; each Ray actor loads the model once, reads its images and writes
    their outputs itself; an actor that dies is restarted and its batch run
    again, and since every output is named by its image and written
    atomically, nothing is duplicated or left half-written. An image that
    cannot be read or segmented is counted in `failures`; the run goes on.

    Before any actor starts, the model and the task are built here once, on
    the CPU, so that a bad model or option fails at once; on a CPU run this
    also exports the graphs a graph backend needs into this machine's cache,
    which the actors here then share (`mobilesam.export.cache` renames a
    finished export into place, so actors exporting at once elsewhere are safe too).

    Args:
        source: What `find_images` takes (file, folder, glob, prompts file, or a
            URI), or references found already.
        task: What to do to each image (`mobilesam.tasks`).
        out_dir: Output folder, on a filesystem every node shares.
        options: The run's options; `model` must be a path every node sees (or a
            known checkpoint or model name), `backend` "auto" is each actor's pick for its
            own machine, and `address` is Ray's: None (RAY_ADDRESS if set, else a new
            local instance), "local" (a new local instance), "auto" (the running
            cluster), or "ray://head:10001"; None if this process is connected already.
            `threads` is for local runs and is not used.

    Returns:
        The summary; its `failures` name images as the source gave them.

    Raises:
        ImportError: Ray Data is not installed (pip install 'mobilesam[ray]').
        ValueError: Bad resources, formats or options, or a source that names no images.
        MobileSamError, OSError: The model or the source cannot be read.
        RuntimeError: The Ray run stopped: an actor failed to start, or the model failed on an image.
    """
    started = time.perf_counter()
    ray = import_ray()
    check_resources(options.workers, options.threads_per_worker, options.gpus_per_worker, options.device)
    out_dir = Path(os.path.abspath(out_dir))
    if isinstance(source, (str, os.PathLike)):
        refs = find_images(source, exclude=out_dir)
    else:
        refs = [ref if isinstance(ref, ImageRef) else ImageRef.from_job(ref) for ref in source]
    # Absolute, since actors have working folders of their own; a name that is no file here stays a name.
    checkpoint = os.path.abspath(options.model) if os.path.exists(options.model) else os.fspath(options.model)
    onnx_dir = None if options.onnx_dir is None else os.path.abspath(options.onnx_dir)
    embeddings = None if options.embeddings is None else os.path.abspath(options.embeddings)
    spec = ModelSpec(checkpoint, options.backend, onnx_dir, options.device, options.threads_per_worker, embeddings)
    _check_on_driver(task, spec)
    summary = RaySummary(total=len(refs))
    with run_frame(out_dir, [ref.stem for ref in refs], options) as todo:
        summary.skipped = len(refs) - len(todo)
        if todo:
            with connected(ray, options.address), own_progress(ray):
                # No more actors than images: each would load the model for nothing.
                threads, gpus = options.threads_per_worker, options.gpus_per_worker
                summary.workers = min(options.workers or default_workers(ray, threads, gpus), len(todo))
                labeler = (task, spec, os.fspath(out_dir), list(options.formats), options.max_pixels)
                rows = _label_on_actors(ray, refs, todo, labeler, summary.workers, threads, gpus)
                _tally(rows, len(todo), refs, summary, options.progress)
    summary.seconds = time.perf_counter() - started
    return summary


def _tally(rows: Iterator[dict[str, Any]], total: int, refs: Sequence[ImageRef], summary: RaySummary, progress: bool) -> None:
    """Count each image's row into `summary` as it comes, under a progress bar, with the backends that ran."""
    backends = set()
    with tqdm(total=total, unit="img", disable=not progress, dynamic_ncols=True) as bar:
        for row in rows:
            summary.record(refs[row["index"]].image, int(row["masks"]), row["error"] or None)
            backends.add(row["backend"])
            bar.update()
            bar.set_postfix(masks=summary.masks, failed=len(summary.failures), refresh=False)
    summary.backends = sorted(backends)


def check_resources(workers: int | None, threads: int, gpus: float, device: str) -> None:
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if threads < 1:
        raise ValueError(f"threads per worker must be at least 1, got {threads}")
    if not (math.isfinite(gpus) and gpus >= 0):
        raise ValueError(f"GPUs per worker must be a number >= 0, got {gpus}")
    on_gpu = torch.device(device).type == "cuda"
    if gpus > 0 and not on_gpu:
        raise ValueError(f"{gpus:g} GPUs per worker need the CUDA device: --device cuda (Python: device='cuda')")
    if on_gpu and gpus == 0:
        raise ValueError("device cuda needs GPUs per worker (--gpus-per-worker): Ray hides the GPUs from actors given none")


def _check_on_driver(task: LabelingTask, spec: ModelSpec) -> None:
    """Build here what each actor builds, so that a bad model, backend or option fails before any actor starts."""
    sam, backend = load_on_driver(spec)
    task.segmenter(sam, backend, spec.store(sam))


def load_on_driver(spec: ModelSpec) -> tuple[Sam, Backend]:
    """Load here the model and backend each actor loads, so that a bad one fails before any actor starts.

    Actors on GPUs run torch; their model is checked here on the CPU, with torch.
    """
    if torch.device(spec.device).type == "cpu":
        spec = dataclasses.replace(spec, threads=None)
    else:
        spec = ModelSpec(spec.model, "torch", embeddings=spec.embeddings)
    return spec.load()


def import_ray() -> ModuleType:
    try:
        import ray
        import ray.data
    except ImportError as err:
        raise ImportError(f"Ray runs need Ray Data: pip install 'mobilesam[ray]' ({err})") from err
    return ray


@contextlib.contextmanager
def connected(ray: ModuleType, address: str | None) -> Iterator[None]:
    """Connect to Ray at `address`, unless this process is connected already; disconnect at the end if we connected."""
    if ray.is_initialized():
        if address is not None:
            raise ValueError(f"this process is connected to Ray already; address {address!r} would be ignored: pass None")
        yield
        return
    ray.init(address=address, logging_level=logging.WARNING)
    try:
        yield
    finally:
        ray.shutdown()


@contextlib.contextmanager
def own_progress(ray: ModuleType) -> Iterator[None]:
    """Our progress bar and summary in place of Ray Data's, whose bars and news would interleave with them.

    Ray Data's warnings still show; its file log (ray-data.log in the session folder) keeps only those too.
    """
    context = ray.data.DataContext.get_current()
    before = context.enable_progress_bars, context.print_on_execution_start
    context.enable_progress_bars = context.print_on_execution_start = False
    levels = {logging.getLogger(name): level for name, level in _RAY_DATA_LOG_LEVELS.items()}
    saved = {logger: logger.level for logger in levels}
    for logger, level in levels.items():
        logger.setLevel(level)
    try:
        yield
    finally:
        context.enable_progress_bars, context.print_on_execution_start = before
        for logger, level in saved.items():
            logger.setLevel(level)


def default_workers(ray: ModuleType, threads: int, gpus: float) -> int:
    """As many actors as the cluster's CPUs (or its GPUs, for GPU actors) hold; at least one."""
    resources = ray.cluster_resources()
    if gpus > 0:
        return max(1, int(resources.get("GPU", 0) // gpus))
    return max(1, int(resources.get("CPU", 1) // threads))


def _label_on_actors(
    ray: ModuleType,
    refs: Sequence[ImageRef],
    todo: Sequence[int],
    labeler: tuple[Any, ...],
    workers: int,
    threads: int,
    gpus: float,
) -> Iterator[dict[str, Any]]:
    """Run `Labeler(*labeler)` on `workers` actors over the images `refs[todo]`; yield a row per image as it is done.

    Raises:
        RuntimeError: The run stopped: an actor failed to start, or the model failed on an image.
    """
    rows = [
        {"index": index, "image": refs[index].readable(), "stem": refs[index].stem, "objects": pickle.dumps(refs[index].objects)}
        for index in todo
    ]
    yield from map_on_actors(ray, rows, Labeler, labeler, workers, threads, gpus)


def map_on_actors(
    ray: ModuleType,
    rows: list[dict[str, Any]],
    actor: type,
    args: tuple[Any, ...],
    workers: int,
    threads: int,
    gpus: float,
) -> Iterator[dict[str, Any]]:
    """Run the callable class `actor(*args)` on `workers` actors over `rows` in small blocks; yield its rows as they come.

    Raises:
        RuntimeError: The run stopped: an actor failed to start, or the model failed on an image.
    """
    blocks = min(len(rows), max(workers * _BLOCKS_PER_WORKER, math.ceil(len(rows) / _MAX_ROWS_PER_BLOCK)))
    # Ray Data's actors are fault tolerant by default: one that dies (killed, out of memory, its node lost)
    # is restarted and the batches it held are run again, without limit.
    mapped = ray.data.from_items(rows, override_num_blocks=blocks).map_batches(
        actor,
        fn_constructor_args=args,
        batch_size=None,
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=threads,
        num_gpus=gpus,
    )
    try:
        yield from mapped.iter_rows()
    except ray.exceptions.RayError as err:
        raise RuntimeError(f"the Ray run stopped: {_original_error(err)}") from err


def _original_error(err: Exception) -> str:
    """The first "SomeError: message" line of the remote traceback that Ray's error carries as text; else all of it."""
    lines = str(err).splitlines()
    return next((line for line in lines if _ERROR_LINE.match(line)), str(err))
