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


def pad_pixels(resized: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(h, w, 3) uint8 resized image -> what a "pixels" encoder graph takes.

    Returns:
        image: (1, size, size, 3) float32 in [0, 255], the image at the top left, zeros elsewhere.
        image_size: (2,) float32 (h, w).
    """
    h, w = resized.shape[:2]
    padded = np.zeros((1, size, size, 3), np.float32)
    padded[0, :h, :w] = resized
    return padded, np.array([h, w], np.float32)


def _bilinear_weights(in_size: int, out_size: int) -> np.ndarray:
    """(out, in) float32 weights of torch's bilinear resize with align_corners=False."""
    source = (np.arange(out_size, dtype=np.float64) + 0.5) * (in_size / out_size) - 0.5
    source = np.clip(source, 0.0, None)
    lower = np.minimum(np.floor(source).astype(np.int64), in_size - 1)
    upper = np.minimum(lower + 1, in_size - 1)
    fraction = source - lower
    weights = np.zeros((out_size, in_size), np.float64)
    rows = np.arange(out_size)
    np.add.at(weights, (rows, lower), 1.0 - fraction)
    np.add.at(weights, (rows, upper), fraction)
    return weights.astype(np.float32)


def resize_bilinear(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(..., h, w) float32 -> (..., H, W): `F.interpolate(mode="bilinear", align_corners=False)` in numpy."""
    rows = _bilinear_weights(array.shape[-2], size[0])
    cols = _bilinear_weights(array.shape[-1], size[1])
    return rows @ np.asarray(array, np.float32) @ cols.T


def upscale_logits(
    low_res_logits: np.ndarray, input_size: tuple[int, int], original_size: tuple[int, int], img_size: int
) -> np.ndarray:
    """(..., 256, 256) low-res logits -> (..., H, W) at the original size: `Sam.postprocess_masks` in numpy.

    Upscaling to the padded square, cropping and resizing are all linear in each axis,
    so each axis's three steps are one (out, 256) matrix: a click's masks cost two
    matrix products instead of a 1024x1024 intermediate.
    """
    low_h, low_w = low_res_logits.shape[-2:]
    rows = _bilinear_weights(input_size[0], original_size[0]) @ _bilinear_weights(low_h, img_size)[: input_size[0]]
    cols = _bilinear_weights(input_size[1], original_size[1]) @ _bilinear_weights(low_w, img_size)[: input_size[1]]
    return rows @ (np.asarray(low_res_logits, np.float32) @ cols.T)


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
