"""Test photos: scikit-image's bundled samples plus a generated non-square image."""

from __future__ import annotations

import functools

import numpy as np
from skimage import data


def generated_image(h: int = 123, w: int = 457, seed: int = 0) -> np.ndarray:
    """Smooth colour gradients with a few discs: (h, w, 3) uint8, deterministic."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    image = np.stack([xx / w * 255, yy / h * 255, (xx + yy) / (h + w) * 255], axis=-1)
    for _ in range(4):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(1, max(2, min(h, w) / 2))
        image[(yy - cy) ** 2 + (xx - cx) ** 2 < r**2] = rng.uniform(0, 255, 3)
    return image.astype(np.uint8)


@functools.lru_cache(maxsize=1)
def sample_images() -> dict[str, np.ndarray]:
    """name -> (H, W, 3) uint8 RGB; different sizes and aspect ratios."""
    return {
        "astronaut": data.astronaut(),  # 512 x 512
        "coffee": data.coffee(),  # 400 x 600
        "chelsea": data.chelsea(),  # 300 x 451
        "generated": generated_image(),  # 123 x 457
    }
