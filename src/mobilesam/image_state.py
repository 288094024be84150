"""The image a predictor holds, as one `ImageEmbedding`; shared by `SamPredictor` and `OnnxPredictor`.

Nothing here imports torch: the embedding is a torch tensor in one
predictor and a numpy array in the other.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Generic

from .embedding import Features, ImageEmbedding


class CurrentImage(ABC, Generic[Features]):
    """The current image's embedding; `features`, `original_size` and `input_size` read from it."""

    def __init__(self) -> None:
        self.reset_image()

    @property
    def is_image_set(self) -> bool:
        return self._embedding is not None

    @property
    def embedding(self) -> ImageEmbedding[Features] | None:
        """The current image's `ImageEmbedding`, to keep and hand back to `set_embedding` later."""
        return self._embedding

    @property
    def features(self) -> Features | None:
        """(1, C, H, W) embedding of the current image, or None."""
        return None if self._embedding is None else self._embedding.features

    @property
    def original_size(self) -> tuple[int, int] | None:
        """(H, W) of the current image as given."""
        return None if self._embedding is None else self._embedding.original_size

    @property
    def input_size(self) -> tuple[int, int] | None:
        """(H, W) of the current image resized for the model, before padding."""
        return None if self._embedding is None else self._embedding.input_size

    def reset_image(self) -> None:
        """Forget the current image and its embedding."""
        self._embedding: ImageEmbedding[Features] | None = None

    def set_embedding(self, embedding: ImageEmbedding[Features]) -> None:
        """Make an embedding computed earlier (`embed`, or `.embedding` after `set_image`) the current image.

        Raises:
            TypeError: `embedding` is not an `ImageEmbedding`.
        """
        if not isinstance(embedding, ImageEmbedding):
            raise TypeError(
                f"set_embedding takes an ImageEmbedding (from .embed(image) or .embedding), got {type(embedding).__name__}"
            )
        self.reset_image()
        self._embedding = embedding

    def set_image(self, image: Any, image_format: str = "RGB") -> None:
        """Compute the embedding of an image (see `embed`) and make it the current image."""
        self.reset_image()  # a failing encoder leaves no stale image behind
        self.set_embedding(self.embed(image, image_format))

    @abstractmethod
    def embed(self, image: Any, image_format: str = "RGB") -> ImageEmbedding[Features]:
        """The `ImageEmbedding` of an image, leaving the current image as it is."""

    def get_image_embedding(self) -> Features:
        """The (1, C, H, W) embedding of the current image (C=256, H=W=64 for SAM)."""
        return self._require_image().features

    def _require_image(self) -> ImageEmbedding[Features]:
        if self._embedding is None:
            raise RuntimeError("no image is set: call .set_image(image) before predicting")
        return self._embedding
