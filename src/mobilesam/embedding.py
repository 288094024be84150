"""`ImageEmbedding`: an embedded image, the one value every consumer of an embedding receives.

A predictor makes it (`SamPredictor.embed`, `OnnxPredictor.embed`) and takes
it back (`set_embedding`); the mask generator (`generate(image,
embedding=...)`), the one-call API, evaluation and the service cache pass
it explicitly instead of recognising pixels they have seen. Torch-free: the
features are a torch tensor from torch backends, a numpy array from the
torch-free runtime.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

Features = TypeVar("Features")  # torch.Tensor or np.ndarray


@dataclass(frozen=True)
class ImageEmbedding(Generic[Features]):
    """The encoder's output for one image, with the two sizes that map it back onto the image.

    Args:
        features: (1, C, h, w) embedding (C=256, h=w=64 for SAM at 1024 input).
        original_size: (H, W) of the image as given.
        input_size: (H, W) of the image resized for the model, before padding.

    Raises:
        ValueError: `features` is not (1, C, h, w), or a size is not two positive integers.
    """

    features: Features
    original_size: tuple[int, int]
    input_size: tuple[int, int]

    def __post_init__(self) -> None:
        shape: Any = getattr(self.features, "shape", None)
        if shape is None or len(shape) != 4 or shape[0] != 1:
            raise ValueError(f"image embedding features must be (1, C, h, w), got {None if shape is None else tuple(shape)}")
        for name in ("original_size", "input_size"):
            size = tuple(int(v) for v in getattr(self, name))
            if len(size) != 2 or min(size) < 1:
                raise ValueError(f"{name} must be (H, W) with both at least 1, got {getattr(self, name)!r}")
            object.__setattr__(self, name, size)

    @property
    def nbytes(self) -> int:
        """Bytes held by the features (what a cache of embeddings counts)."""
        features: Any = self.features
        if hasattr(features, "element_size"):
            return int(features.element_size() * features.nelement())
        return int(features.nbytes)
