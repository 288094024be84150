"""The image a predictor holds: its embedding and sizes, shared by `SamPredictor` and `OnnxPredictor`.

Nothing here imports torch: the embedding is a torch tensor in one
predictor and a numpy array in the other.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

Embedding = TypeVar("Embedding")  # torch.Tensor or np.ndarray, (1, C, H, W)


class CurrentImage(Generic[Embedding]):
    """The current image's embedding, its size as given and its size resized for the model."""

    def __init__(self) -> None:
        self.reset_image()

    @property
    def is_image_set(self) -> bool:
        return self._features is not None

    @property
    def features(self) -> Embedding | None:
        """(1, C, H, W) embedding of the current image, or None."""
        return self._features

    @property
    def original_size(self) -> tuple[int, int] | None:
        """(H, W) of the current image as given."""
        return self._original_size

    @property
    def input_size(self) -> tuple[int, int] | None:
        """(H, W) of the current image resized for the model, before padding."""
        return self._input_size

    def reset_image(self) -> None:
        """Forget the current image and its embedding."""
        self._features: Embedding | None = None
        self._original_size: tuple[int, int] | None = None
        self._input_size: tuple[int, int] | None = None

    def set_embedding(self, image_embedding: Embedding, original_size: tuple[int, int], input_size: tuple[int, int]) -> None:
        """Make an embedding computed earlier the current image, without running the encoder.

        For caches (a service, an evaluation reusing one embedding for several
        protocols): keep `features`, `original_size` and `input_size` after
        `set_image`, and hand them back here.

        Args:
            image_embedding: (1, C, H, W) embedding of this model's encoder.
            original_size: (H, W) of the image as given to `set_image`.
            input_size: (H, W) of the image resized for the model, before padding.
        """
        shape: Any = getattr(image_embedding, "shape", None)
        if shape is None or len(shape) != 4 or shape[0] != 1:
            raise ValueError(f"image_embedding must be (1, C, H, W), got {None if shape is None else tuple(shape)}")
        self.reset_image()
        self._features = image_embedding
        self._original_size = (int(original_size[0]), int(original_size[1]))
        self._input_size = (int(input_size[0]), int(input_size[1]))

    def get_image_embedding(self) -> Embedding:
        """The (1, C, H, W) embedding of the current image (C=256, H=W=64 for SAM)."""
        return self._require_image()

    def _require_image(self) -> Embedding:
        if self._features is None:
            raise RuntimeError("no image is set: call .set_image(image) before predicting")
        return self._features
