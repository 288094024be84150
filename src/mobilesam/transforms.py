"""Mapping user images and prompt coordinates into the model frame.

The model sees the image resized so its long side is the model input size
(1024), then normalised and zero-padded to a square (`Sam.preprocess` in
torch, `normalize_and_pad` in numpy). Coordinates follow the same resize,
scaled by `coords_scale`. Torch is imported only inside the torch methods,
so the onnxruntime predictor runs without it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    import torch


def get_preprocess_shape(old_h: int, old_w: int, long_side: int) -> tuple[int, int]:
    """(H, W) of an image resized so its long side is `long_side`, rounded half up."""
    scale = long_side * 1.0 / max(old_h, old_w)
    return int(old_h * scale + 0.5), int(old_w * scale + 0.5)


def coords_scale(original_size: Sequence[int], long_side: int) -> tuple[float, float]:
    """(x, y) factors taking coordinates in an (H, W) image to the image resized to `long_side`."""
    old_h, old_w = original_size
    new_h, new_w = get_preprocess_shape(old_h, old_w, long_side)
    return new_w / old_w, new_h / old_h


def normalize_and_pad(resized: np.ndarray, pixel_mean: Sequence[float], pixel_std: Sequence[float], size: int) -> np.ndarray:
    """(h, w, 3) uint8 resized image -> (1, 3, size, size) float32, normalised, zero-padded at the bottom right.

    The same float32 arithmetic as `Sam.preprocess`, so both give the same bits.
    """
    mean = np.asarray(pixel_mean, np.float32).reshape(3, 1, 1)
    std = np.asarray(pixel_std, np.float32).reshape(3, 1, 1)
    normalised = (resized.transpose(2, 0, 1).astype(np.float32) - mean) / std
    h, w = resized.shape[:2]
    padded = np.zeros((1, 3, size, size), np.float32)
    padded[0, :, :h, :w] = normalised
    return padded


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
        return np.array(coords, dtype=np.float64) * np.array(coords_scale(original_size, self.target_length))

    def apply_boxes(self, boxes: np.ndarray, original_size: tuple[int, ...]) -> np.ndarray:
        """(B, 4) XYXY in the original image -> float64 (B, 4) in the resized image."""
        return self.apply_coords(np.asarray(boxes).reshape(-1, 2, 2), original_size).reshape(-1, 4)

    def apply_image_torch(self, image: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) float -> resized (B, C, h, w); antialiased bilinear, close to but not exactly `apply_image`."""
        import torch.nn.functional as F

        target = get_preprocess_shape(image.shape[2], image.shape[3], self.target_length)
        return F.interpolate(image, target, mode="bilinear", align_corners=False, antialias=True)

    def apply_coords_torch(self, coords: torch.Tensor, original_size: tuple[int, ...]) -> torch.Tensor:
        """(..., 2) XY in the original image -> XY in the resized image.

        float64 stays float64; anything else becomes float32.
        """
        import torch

        dtype = torch.float64 if coords.dtype == torch.float64 else torch.float32
        return coords.to(dtype) * coords.new_tensor(coords_scale(original_size, self.target_length), dtype=dtype)

    def apply_boxes_torch(self, boxes: torch.Tensor, original_size: tuple[int, ...]) -> torch.Tensor:
        """(B, 4) XYXY in the original image -> (B, 4) in the resized image."""
        return self.apply_coords_torch(boxes.reshape(-1, 2, 2), original_size).reshape(-1, 4)
