"""Mapping user images and prompt coordinates into the model frame.

The model sees the image resized so its long side is the model input size
(1024), then normalised and zero-padded to a square by `Sam.preprocess`.
Coordinates follow the same resize. Each coordinate transform exists once,
in torch; the numpy methods convert at the boundary and call it.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def get_preprocess_shape(old_h: int, old_w: int, long_side: int) -> tuple[int, int]:
    """(H, W) of an image resized so its long side is `long_side`, rounded half up."""
    scale = long_side * 1.0 / max(old_h, old_w)
    return int(old_h * scale + 0.5), int(old_w * scale + 0.5)


class ResizeLongestSide:
    """Resizes images to a long side of `target_length`, and coordinates and boxes with them.

    API-compatible with `segment_anything.utils.transforms.ResizeLongestSide`.
    """

    def __init__(self, target_length: int) -> None:
        self.target_length = target_length

    get_preprocess_shape = staticmethod(get_preprocess_shape)

    def apply_image(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 -> (h, w, 3) uint8 with max(h, w) == target_length.

        PIL's bilinear filter (antialiased when shrinking), as the published
        models were run with.
        """
        new_h, new_w = get_preprocess_shape(image.shape[0], image.shape[1], self.target_length)
        return np.array(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR))

    def apply_coords(self, coords: np.ndarray, original_size: tuple[int, ...]) -> np.ndarray:
        """(..., 2) XY in the original image -> float64 XY in the resized image."""
        coords_torch = torch.from_numpy(np.array(coords, dtype=np.float64))
        return self.apply_coords_torch(coords_torch, original_size).numpy()

    def apply_boxes(self, boxes: np.ndarray, original_size: tuple[int, ...]) -> np.ndarray:
        """(B, 4) XYXY in the original image -> float64 (B, 4) in the resized image."""
        return self.apply_coords(np.asarray(boxes).reshape(-1, 2, 2), original_size).reshape(-1, 4)

    def apply_image_torch(self, image: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) float -> resized (B, C, h, w); antialiased bilinear, close to but not exactly `apply_image`."""
        target = get_preprocess_shape(image.shape[2], image.shape[3], self.target_length)
        return F.interpolate(image, target, mode="bilinear", align_corners=False, antialias=True)

    def apply_coords_torch(self, coords: torch.Tensor, original_size: tuple[int, ...]) -> torch.Tensor:
        """(..., 2) XY in the original image -> XY in the resized image.

        float64 stays float64; anything else becomes float32.
        """
        old_h, old_w = original_size
        new_h, new_w = get_preprocess_shape(old_h, old_w, self.target_length)
        dtype = torch.float64 if coords.dtype == torch.float64 else torch.float32
        scale = torch.tensor([new_w / old_w, new_h / old_h], dtype=dtype, device=coords.device)
        return coords.to(dtype) * scale

    def apply_boxes_torch(self, boxes: torch.Tensor, original_size: tuple[int, ...]) -> torch.Tensor:
        """(B, 4) XYXY in the original image -> (B, 4) in the resized image."""
        return self.apply_coords_torch(boxes.reshape(-1, 2, 2), original_size).reshape(-1, 4)
