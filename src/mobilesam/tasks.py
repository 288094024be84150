"""What `mobilesam predict` and `everything` do to each image, as small picklable values.

The local run builds its segmenter from a task in this process; a Ray run
sends the task to each actor, which builds the same segmenter around its
own model (`mobilesam.distributed`). So both runs make their masks with one
piece of code.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .automatic import GENERATOR_DEFAULTS, GeneratorOptions, SamAutomaticMaskGenerator
from .detect import Detections, Detector, DetectorOptions, boxes_for_image, segment_detections
from .labeling import Segmenter
from .predictor import SamPredictor
from .prompts import Prompt, check_in_image
from .results import Results
from .segment import segment_prompts
from .tiling import check_tiling, embed_tiles, generate_tiled, segment_tiled

if TYPE_CHECKING:
    from .backends import Backend
    from .embedding_store import EmbeddingStore
    from .modeling import Sam

ImageSegmenter = Callable[[np.ndarray, tuple[Prompt, ...] | None, str], Results]
"""(image, its own objects or None, its path or URI) -> its masks; the image is (H, W, 3) uint8 RGB."""


@dataclass(frozen=True)
class PromptTask:
    """`mobilesam predict`: the masks of each image's objects (1, or 3 with `multimask`, per object).

    Attributes:
        objects: The command's objects, for images without their own (from a prompts file).
        multimask: Three candidate masks per object instead of the best one.
        tile_shape: Decode each object on a window of this many pixels (`mobilesam.tiling`); None: the whole image.
        halo: With `tile_shape`, pixels each window reaches past what it owns.
    """

    objects: tuple[Prompt, ...] | None = None
    multimask: bool = False
    tile_shape: int | None = None
    halo: int = 0

    def segmenter(self, sam: Sam, backend: Backend, embeddings: EmbeddingStore | None = None) -> ImageSegmenter:
        """The segmenter of this task, running `sam` on `backend`, reading (and filling) the store `embeddings`.

        Raises:
            ValueError: A bad tiling (`mobilesam.tiling.check_tiling`), or a halo without a tile_shape.
        """
        check_tiling(self.tile_shape, self.halo)
        predictor = SamPredictor(sam, backend, embeddings)

        def segment(image: np.ndarray, objects: tuple[Prompt, ...] | None, path: str) -> Results:
            objects = objects or self.objects
            if not objects:
                raise ValueError("no objects to segment: give points or a box")
            # Before the costly embedding, so a prompt outside the image fails fast.
            for prompt in objects:
                check_in_image(prompt, image.shape[:2])
            if self.tile_shape is not None:
                tiled = embed_tiles(predictor, image, self.tile_shape, self.halo, prompts=objects)
                return segment_tiled(predictor, tiled, objects, image, multimask_output=self.multimask, path=path)
            embedding = predictor.embed(image)
            return segment_prompts(predictor, embedding, objects, image, multimask_output=self.multimask, path=path)

        return segment


@dataclass(frozen=True)
class EverythingTask:
    """`mobilesam everything`: the automatic mask generator's masks, with these options.

    Attributes:
        options: The generator's options.
        tile_shape: Segment windows of this many pixels and merge them (`mobilesam.tiling`); None: the whole image.
        halo: With `tile_shape`, pixels each window reaches past what it owns.
    """

    options: GeneratorOptions = GENERATOR_DEFAULTS
    tile_shape: int | None = None
    halo: int = 0

    def segmenter(self, sam: Sam, backend: Backend, embeddings: EmbeddingStore | None = None) -> ImageSegmenter:
        """The segmenter of this task, running `sam` on `backend`, reading (and filling) the store `embeddings`.

        Raises:
            ValueError: An option out of range (the generator checks them), a bad tiling, or a halo without a tile_shape.
        """
        check_tiling(self.tile_shape, self.halo)
        generator = SamAutomaticMaskGenerator(sam, **dataclasses.asdict(self.options), backend=backend, embeddings=embeddings)

        def segment(image: np.ndarray, objects: tuple[Prompt, ...] | None, path: str) -> Results:
            if self.tile_shape is not None:
                return Results.from_mask_records(image, generate_tiled(generator, image, self.tile_shape, self.halo), path=path)
            return Results.from_mask_records(image, generator.generate(image), path=path)

        return segment


@dataclass(frozen=True)
class BoxTask:
    """`mobilesam everything --detector/--boxes`: one mask per box of a YOLO detector or a boxes file (MobileSAMv2).

    Holds only the detector's path, so it pickles for Ray; each segmenter builds its own detector.

    Attributes:
        detector: A YOLO checkpoint or YAML (`mobilesam.detect.Detector`), or None with `boxes`.
        boxes: Image key -> its boxes, from `mobilesam.detect.read_boxes_file`; or None with `detector`.
        detector_options: The detector's `YOLO.predict` settings.
        box_nms_thresh: Mask-box IoU above which the weaker mask is dropped; None keeps every mask.
    """

    detector: str | None = None
    boxes: dict[str, Detections] | None = None
    detector_options: DetectorOptions = DetectorOptions()
    box_nms_thresh: float | None = GENERATOR_DEFAULTS.box_nms_thresh

    def segmenter(self, sam: Sam, backend: Backend, embeddings: EmbeddingStore | None = None) -> ImageSegmenter:
        """The segmenter of this task, running `sam` on `backend` and its detector, reading (and filling) `embeddings`.

        Raises:
            ValueError: Neither or both of `detector` and `boxes`.
            ImportError: A detector without Ultralytics installed.
        """
        if (self.detector is None) == (self.boxes is None):
            raise ValueError("give either a detector or a boxes file, not both or neither")
        predictor = SamPredictor(sam, backend, embeddings)
        table = self.boxes
        detect = None if self.detector is None else Detector(self.detector, self.detector_options)

        def segment(image: np.ndarray, objects: tuple[Prompt, ...] | None, path: str) -> Results:
            detections = detect(image) if detect is not None else boxes_for_image(table or {}, path)
            embedding = predictor.embed(image) if len(detections.boxes) else None
            return segment_detections(predictor, embedding, detections, image, box_nms_thresh=self.box_nms_thresh, path=path)

        return segment


LabelingTask = PromptTask | EverythingTask | BoxTask


def job_segmenter(segment: ImageSegmenter) -> Segmenter:
    """`segment` as `mobilesam.labeling.label_images` calls it: on a job and its image."""
    return lambda job, image: segment(image, job.objects, str(job.path))
