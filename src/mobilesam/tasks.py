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
from .labeling import Segmenter
from .predictor import SamPredictor
from .prompts import Prompt, check_in_image
from .results import Results
from .segment import segment_prompts

if TYPE_CHECKING:
    from .backends import Backend
    from .modeling import Sam

ImageSegmenter = Callable[[np.ndarray, tuple[Prompt, ...] | None, str], Results]
"""(image, its own objects or None, its path or URI) -> its masks; the image is (H, W, 3) uint8 RGB."""


@dataclass(frozen=True)
class PromptTask:
    """`mobilesam predict`: the masks of each image's objects (1, or 3 with `multimask`, per object).

    Attributes:
        objects: The command's objects, for images without their own (from a prompts file).
        multimask: Three candidate masks per object instead of the best one.
    """

    objects: tuple[Prompt, ...] | None = None
    multimask: bool = False

    def segmenter(self, sam: Sam, backend: Backend) -> ImageSegmenter:
        """The segmenter of this task, running `sam` on `backend`."""
        predictor = SamPredictor(sam, backend)

        def segment(image: np.ndarray, objects: tuple[Prompt, ...] | None, path: str) -> Results:
            objects = objects or self.objects
            if not objects:
                raise ValueError("no objects to segment: give points or a box")
            # Before the costly embedding, so a prompt outside the image fails fast.
            for prompt in objects:
                check_in_image(prompt, image.shape[:2])
            embedding = predictor.embed(image)
            return segment_prompts(predictor, embedding, objects, image, multimask_output=self.multimask, path=path)

        return segment


@dataclass(frozen=True)
class EverythingTask:
    """`mobilesam everything`: the automatic mask generator's masks, with these options."""

    options: GeneratorOptions = GENERATOR_DEFAULTS

    def segmenter(self, sam: Sam, backend: Backend) -> ImageSegmenter:
        """The segmenter of this task, running `sam` on `backend`.

        Raises:
            ValueError: An option out of range (the generator checks them).
        """
        generator = SamAutomaticMaskGenerator(sam, **dataclasses.asdict(self.options), backend=backend)

        def segment(image: np.ndarray, objects: tuple[Prompt, ...] | None, path: str) -> Results:
            return Results.from_mask_records(image, generator.generate(image), path=path)

        return segment


LabelingTask = PromptTask | EverythingTask


def job_segmenter(segment: ImageSegmenter) -> Segmenter:
    """`segment` as `mobilesam.labeling.label_images` calls it: on a job and its image."""
    return lambda job, image: segment(image, job.objects, str(job.path))
