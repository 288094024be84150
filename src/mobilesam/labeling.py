"""Batch labeling: segment many images and write each one's outputs, resumably.

Every output file appears complete or not at all (written to a temporary
name, then renamed), so an image whose outputs all exist is done: a rerun
skips it, and an interrupted run leaves nothing half-written. A run killed
outright (SIGKILL) leaves hidden temporaries, which the next run removes.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .atomic import remove_dead_temporaries, run_lock
from .io.images import DEFAULT_MAX_PIXELS
from .io.prefetch import prefetch_images
from .io.sources import ImageJob
from .io.writers import merge_coco_outputs, output_paths, write_outputs
from .predictor import SamPredictor
from .prompts import Prompt, check_in_image
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


def label_images(
    jobs: Sequence[ImageJob],
    segment: Segmenter,
    out_dir: str | Path,
    formats: Sequence[str],
    *,
    overwrite: bool = False,
    progress: bool = True,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> RunSummary:
    """Segment each image with `segment` and write its outputs in `formats` under `out_dir`.

    An image that cannot be read or segmented (bad file, more than
    `max_pixels` pixels, prompt outside the image) is logged and counted in
    `failures`; the run goes on. With "coco" among the formats,
    `out_dir/coco.json` gathers every done image at the end.

    Args:
        jobs: Images with their output stems (see `mobilesam.io.sources.find_jobs`).
        segment: Maps (job, (H, W, 3) uint8 RGB image) to its `Results`.
        out_dir: Output folder, created if needed.
        formats: Names from `mobilesam.io.writers.OUTPUT_FORMATS`.
        overwrite: Redo images whose outputs exist.
        progress: Show a progress bar on stderr.
        max_pixels: Largest width x height of an image file, checked before it is decoded.
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    summary = RunSummary(total=len(jobs))
    todo = [job for job in jobs if overwrite or not is_done(out_dir, job.stem, formats)]
    summary.skipped = len(jobs) - len(todo)
    # Before taking our lock: a killed run that had our pid (as every run may in a container) left its lock unheld.
    remove_dead_temporaries(out_dir, recursive=True)
    with run_lock(out_dir), tqdm(total=len(todo), unit="img", disable=not progress, dynamic_ncols=True) as bar:
        for job, image in prefetch_images(todo, max_pixels=max_pixels):
            summary.record(str(job.path), *label_one(functools.partial(segment, job), image, out_dir, job.stem, formats))
            bar.update()
            bar.set_postfix(masks=summary.masks, failed=len(summary.failures), refresh=False)
        if "coco" in formats:
            merge_coco_outputs(out_dir, [job.stem for job in jobs])
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


def segment_objects(
    predictor: SamPredictor,
    image: np.ndarray,
    objects: Sequence[Prompt],
    multimask_output: bool = False,
    path: str | None = None,
) -> Results:
    """Embed `image` once and predict each object's masks (1, or 3 with `multimask_output`).

    Objects may have different numbers of points; in `Results` the shorter
    ones are padded with label -1 (SAM's "not a point"), and objects without
    a box get a NaN box when others have one.

    Args:
        predictor: What embeds and decodes.
        image: (H, W, 3) uint8 RGB.
        objects: One prompt per object, checked where they came from (a
            prompts file, the command line); here only against the image.
        multimask_output: Three candidate masks per object instead of the best one.
        path: The image's path, for `Results`.

    Raises:
        ValueError: No objects, or a prompt that does not fit the image (see `mobilesam.prompts.check_in_image`).
    """
    if not objects:
        raise ValueError("no objects to segment: give points or a box")
    # Before the costly embedding, so a prompt outside the image fails fast.
    for prompt in objects:
        check_in_image(prompt, image.shape[:2])
    predictor.set_image(image)
    masks, scores, points, labels, boxes = [], [], [], [], []
    for prompt in objects:
        object_masks, object_scores, _ = predictor.predict_prompt(prompt, multimask_output=multimask_output)
        masks.append(object_masks)
        scores.append(object_scores)
        has_points = prompt.point_coords is not None
        points.extend([prompt.point_coords if has_points else np.zeros((0, 2))] * len(object_masks))
        labels.extend([prompt.point_labels if has_points else np.zeros(0)] * len(object_masks))
        boxes.extend([np.full(4, np.nan) if prompt.box is None else prompt.box] * len(object_masks))
    width = max(len(p) for p in points)
    padded_points = np.zeros((len(points), width, 2))
    padded_labels = np.full((len(points), width), -1, dtype=np.int64)
    for index, (p, l) in enumerate(zip(points, labels)):
        padded_points[index, : len(p)] = p
        padded_labels[index, : len(l)] = l
    any_box = any(prompt.box is not None for prompt in objects)
    return Results(
        orig_img=image,
        masks=np.concatenate(masks),
        scores=np.concatenate(scores).astype(np.float32),
        points=padded_points if width else None,
        labels=padded_labels if width else None,
        bboxes=np.stack(boxes) if any_box else None,
        path=path,
    )
