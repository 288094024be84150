"""`SAM`: the one-call interface, shaped like Ultralytics' `SAM(...).predict(...)`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .automatic import SamAutomaticMaskGenerator
from .backends import make_backend
from .embedding import ImageEmbedding
from .io.images import DEFAULT_MAX_PIXELS, ImageSource, load_image, pixels_digest
from .modeling import Sam, count_parameters
from .predictor import SamPredictor
from .prompts import Prompt, as_object_prompts, check_in_image
from .registry import load_sam
from .results import Results
from .segment import segment_prompts


class SAM:
    """A MobileSAM or SAM model ready to segment images.

    Args:
        model: A checkpoint path, a known checkpoint filename ("mobile_sam.pt",
            "sam_vit_b_01ec64.pth", ...; fetched into the cache when missing),
            or a model name ("vit_t", ...) for random weights.
        device: Torch device; default CPU.
        backend: What embeds and decodes: "auto" (the fastest engine on this machine whose
            masks reproduce fp32's, `fidelity.FAITHFUL`; `info()` names it), or a name of
            `mobilesam.backends.BACKENDS` ("torch" gives the reference's numerics exactly).
        half: Reduced precision, as in Ultralytics: with "auto", the fastest bf16/int8 engine
            measured within `fidelity.REDUCED` on this CPU class (`predict(half=...)` switches too).

    Example:
        >>> model = SAM("mobile_sam.pt")
        >>> results = model.predict("photo.jpg", points=[900, 370], labels=[1])
        >>> results[0].masks.shape
        (1, 720, 1280)
    """

    def __init__(
        self,
        model: str | os.PathLike[str] = "mobile_sam.pt",
        device: str | torch.device = "cpu",
        backend: str = "auto",
        half: bool = False,
    ) -> None:
        self.model: Sam = load_sam(model, device=device)
        self._backend_name = backend
        self._use_backend(half)

    def _use_backend(self, half: bool) -> None:
        self.half = half
        self.backend = make_backend(self._backend_name, self.model, half=half)
        self.predictor = SamPredictor(self.model, self.backend)
        # The last image's pixel digest and embedding: asking again about it skips the encoder.
        self._kept: tuple[str, ImageEmbedding[torch.Tensor]] | None = None

    def __call__(self, source: ImageSource | Sequence[ImageSource], **kwargs: Any) -> list[Results]:
        return self.predict(source, **kwargs)

    def predict(
        self,
        source: ImageSource | Sequence[ImageSource],
        points: Any = None,
        labels: Any = None,
        bboxes: Any = None,
        multimask_output: bool = False,
        image_format: str = "RGB",
        max_pixels: int = DEFAULT_MAX_PIXELS,
        half: bool | None = None,
        **generator_options: Any,
    ) -> list[Results]:
        """Segment the objects the prompts point at.

        Args:
            source: An image path, `pathlib.Path`, URL, PIL image or (H, W, 3)
                uint8 array, or a list of them (the same prompts apply to each).
            points: [x, y] (one object), [[x, y], ...] (one object per point) or
                [[[x, y], ...], ...] (several points per object); pixels of the original image.
            labels: 1 foreground / 0 background, nested like `points` without XY;
                default all foreground.
            bboxes: [x1, y1, x2, y2] or a list of boxes, one object each.
            multimask_output: Three candidate masks per object instead of the best one.
            image_format: "RGB" or "BGR" for array sources (cv2.imread gives BGR).
            max_pixels: Largest width x height of an image file or URL, checked before it is
                decoded (`mobilesam.errors.ImageTooLarge` above it); arrays and PIL images are not checked.
            half: Switch to reduced precision (True) or back to the faithful default (False)
                for this and later calls, as `SAM(half=...)`; None keeps the current choice.
            **generator_options: With no prompt at all the whole image is
                segmented ("segment everything"); these go to
                `SamAutomaticMaskGenerator` (points_per_side, pred_iou_thresh, ...).

        Returns:
            One `Results` per image.
        """
        if half is not None and half != self.half:
            self._use_backend(half)
        sources = list(source) if isinstance(source, (list, tuple)) else [source]
        if points is None and bboxes is None:
            if labels is not None:
                raise ValueError("labels were given without points")
            if multimask_output:
                raise ValueError("multimask_output applies to prompts; segment everything picks masks itself")
            if "output_mode" in generator_options:
                raise TypeError("output_mode is not an option here: Results hold binary masks (see Results.to_dict for RLE)")
            generator = SamAutomaticMaskGenerator(self.model, backend=self.backend, **generator_options)
            return [self._segment_everything(item, generator, image_format, max_pixels) for item in sources]
        if generator_options:
            raise TypeError(f"options {sorted(generator_options)} apply only to segment everything (no prompts)")
        prompts = as_object_prompts(points, labels, bboxes)
        return [self._predict_one(item, prompts, multimask_output, image_format, max_pixels) for item in sources]

    def _segment_everything(
        self, source: ImageSource, generator: SamAutomaticMaskGenerator, image_format: str, max_pixels: int
    ) -> Results:
        image = load_image(source, image_format, max_pixels=max_pixels)
        records = generator.generate(image, embedding=self._embedding_of(image))
        return Results.from_mask_records(image, records, path=_source_path(source))

    def _predict_one(
        self, source: ImageSource, prompts: list[Prompt], multimask_output: bool, image_format: str, max_pixels: int
    ) -> Results:
        image = load_image(source, image_format, max_pixels=max_pixels)
        for prompt in prompts:
            check_in_image(prompt, image.shape[:2])
        return segment_prompts(
            self.predictor,
            self._embedding_of(image),
            prompts,
            image,
            multimask_output=multimask_output,
            path=_source_path(source),
        )

    def _embedding_of(self, image: np.ndarray) -> ImageEmbedding[torch.Tensor]:
        """The embedding of an (H, W, 3) uint8 RGB image: the kept one when these are its pixels."""
        digest = pixels_digest(image)
        if self._kept is None or self._kept[0] != digest:
            self._kept = None  # a failing encoder keeps nothing stale
            self._kept = (digest, self.predictor.embed(image))
        return self._kept[1]

    def info(self, verbose: bool = True) -> dict[str, int]:
        """Parameter counts of the model and its parts; printed when `verbose`, with the backend in use."""
        counts = {
            "image_encoder": count_parameters(self.model.image_encoder),
            "prompt_encoder": count_parameters(self.model.prompt_encoder),
            "mask_decoder": count_parameters(self.model.mask_decoder),
            "total": count_parameters(self.model),
        }
        if verbose:
            print(", ".join(f"{name} {count:,}" for name, count in counts.items()) + " parameters")
            print(f"backend {self.backend.spec.label}: {self.backend.spec.summary}")
        return counts


def _source_path(source: ImageSource) -> str | None:
    return os.fspath(source) if isinstance(source, (str, os.PathLike)) else None
