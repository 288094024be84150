"""Batch labeling: segment many images and write each one's outputs, resumably.

Every output file appears complete or not at all (written to a temporary
name, then renamed), so an image whose outputs all exist is done: a rerun
skips it, and an interrupted run leaves nothing half-written. A run killed
outright (SIGKILL) leaves hidden temporaries, which the next run removes.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .atomic import remove_dead_temporaries, run_lock
from .io.images import DEFAULT_MAX_PIXELS
from .io.prefetch import prefetch_images
from .io.sources import ImageJob
from .io.writers import finalise_outputs, output_paths, write_outputs
from .results import Results

logger = logging.getLogger(__name__)

Segmenter = Callable[[ImageJob, np.ndarray], Results]


@dataclass
class RunSummary:
    """What a batch run did.

    Attributes:
        total: Images the source named.
        written: Images segmented and written in this run.
        skipped: Images whose outputs were already complete.
        masks: Masks written in this run.
        failures: (image path, reason) for each image that could not be done.
        seconds: Wall time of the run.
    """

    total: int = 0
    written: int = 0
    skipped: int = 0
    masks: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def record(self, path: str, masks: int, error: str | None) -> None:
        """Count one image: written with `masks` masks, or failed for `error` (see `label_one`)."""
        if error is None:
            self.written += 1
            self.masks += masks
        else:
            logger.info("failed %s: %s", path, error)
            self.failures.append((path, error))

    def describe(self) -> str:
        """One line for the end of a run."""
        rate = self.written / self.seconds if self.seconds > 0 else 0.0
        return (
            f"{self.total} images: {self.written} written, {self.skipped} already done, {len(self.failures)} failed; "
            f"{self.masks} masks; {self.seconds:.1f} s ({rate:.2f} images/s)"
        )


@dataclass(frozen=True)
class RunOptions:
    """How a batch run goes, here or on Ray: one value from the command line down to the workers.

    Attributes:
        formats: Names from `mobilesam.io.writers.OUTPUT_FORMATS`.
        overwrite: Redo images whose outputs exist.
        progress: Show a progress bar on stderr.
        max_pixels: Largest width x height of an image file, checked before it is decoded.
        model: Checkpoint path, known checkpoint name or model name.
        backend: A name of `mobilesam.backends.BACKENDS`, or "auto".
        onnx_dir: Folder written by `mobilesam export`, for the graph backends.
        device: Torch device: "cpu", or "cuda" (on Ray with `gpus_per_worker`).
        threads: Torch and engine threads of a local run; None leaves the default.
        address: Ray's `ray.init` address for a Ray run (see `mobilesam.distributed.label`).
        workers: Ray actors; None: as many as the cluster's CPUs (or GPUs) hold.
        threads_per_worker: CPUs of each Ray actor, and its torch / engine threads.
        gpus_per_worker: GPUs of each Ray actor, fractions allowed.
        embeddings: An embedding store's folder (`mobilesam.embedding_store`) that the run
            reads before embedding an image, and fills with what it embeds; on Ray, a folder
            every node shares.
    """

    formats: tuple[str, ...] = ("png", "overlay")
    overwrite: bool = False
    progress: bool = True
    max_pixels: int = DEFAULT_MAX_PIXELS
    model: str | os.PathLike[str] = "mobile_sam.pt"
    backend: str = "auto"
    onnx_dir: str | os.PathLike[str] | None = None
    device: str = "cpu"
    threads: int | None = None
    address: str | None = None
    workers: int | None = None
    threads_per_worker: int = 1
    gpus_per_worker: float = 0.0
    embeddings: str | os.PathLike[str] | None = None


@contextlib.contextmanager
def run_frame(out_dir: Path, stems: Sequence[str], options: RunOptions) -> Iterator[list[int]]:
    """The frame of every batch run: yields the indexes of `stems` left to do, with the output folder locked.

    Images whose outputs all exist are skipped (unless `options.overwrite`).
    Temporaries that killed runs left are swept before the lock is taken and
    again at the end (a Ray actor killed mid-write leaves some); when the run
    ends without an error, each format's finalise step runs (COCO's merged file).
    """
    todo = [index for index, stem in enumerate(stems) if options.overwrite or not is_done(out_dir, stem, options.formats)]
    # Before taking our lock: a killed run that had our pid (as every run may in a container) left its lock unheld.
    remove_dead_temporaries(out_dir, recursive=True)
    with run_lock(out_dir):
        yield todo
        finalise_outputs(out_dir, stems, options.formats)
        remove_dead_temporaries(out_dir, recursive=True)


def label_images(
    jobs: Sequence[ImageJob], segment: Segmenter, out_dir: str | Path, options: RunOptions = RunOptions()
) -> RunSummary:
    """Segment each image with `segment` and write its outputs under `out_dir`, as `options` say.

    An image that cannot be read or segmented (bad file, more than
    `options.max_pixels` pixels, prompt outside the image) is logged and
    counted in `failures`; the run goes on. The model options of `options`
    are the caller's business: `segment` already holds its model.

    Args:
        jobs: Images with their output stems (see `mobilesam.io.sources.find_jobs`).
        segment: Maps (job, (H, W, 3) uint8 RGB image) to its `Results`.
        out_dir: Output folder, created if needed.
        options: Formats, overwrite, progress and the pixel limit.
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    summary = RunSummary(total=len(jobs))
    with run_frame(out_dir, [job.stem for job in jobs], options) as todo:
        summary.skipped = len(jobs) - len(todo)
        todo_jobs = [jobs[index] for index in todo]
        with tqdm(total=len(todo_jobs), unit="img", disable=not options.progress, dynamic_ncols=True) as bar:
            for job, image in prefetch_images(todo_jobs, max_pixels=options.max_pixels):
                outcome = label_one(functools.partial(segment, job), image, out_dir, job.stem, options.formats)
                summary.record(str(job.path), *outcome)
                bar.update()
                bar.set_postfix(masks=summary.masks, failed=len(summary.failures), refresh=False)
    summary.seconds = time.perf_counter() - started
    return summary


def label_one(
    segment: Callable[[np.ndarray], Results],
    image: np.ndarray | Exception,
    out_dir: Path,
    stem: str,
    formats: Sequence[str],
) -> tuple[int, str | None]:
    """Segment one image and write its outputs: the step of `label_images` that Ray actors run too.

    Args:
        segment: Maps the (H, W, 3) uint8 RGB image to its `Results`.
        image: The image, or the error that reading it raised.
        out_dir: Output folder.
        stem: The image's output name.
        formats: Names from `mobilesam.io.writers.OUTPUT_FORMATS`.

    Returns:
        (masks written, None); or (0, the reason) for an image that could not be read,
        segmented or written (an `OSError` or `ValueError`: a bad file, a prompt outside
        the image). Other errors (the model failing) propagate.
    """
    try:
        if isinstance(image, Exception):
            raise image
        result = segment(image)
        write_outputs(result, out_dir, stem, formats)
    except (OSError, ValueError) as err:
        return 0, str(err)
    return len(result), None


def is_done(out_dir: Path, stem: str, formats: Sequence[str]) -> bool:
    """Whether every output of image `stem` exists; each is written atomically, so it is complete."""
    return all(path.exists() for path in output_paths(out_dir, stem, formats))
