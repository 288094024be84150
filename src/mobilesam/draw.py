"""Masks and prompts drawn over an image: arrays in, an (H, W, 3) uint8 RGB array out; no files."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

# Distinct, colour-blind friendly (Okabe-Ito, then Tableau) RGB colours for masks.
PALETTE = np.array(
    [
        (230, 159, 0),
        (86, 180, 233),
        (0, 158, 115),
        (240, 228, 66),
        (0, 114, 178),
        (213, 94, 0),
        (204, 121, 167),
        (31, 119, 180),
        (255, 127, 14),
        (44, 160, 44),
        (214, 39, 40),
        (148, 103, 189),
        (140, 86, 75),
        (227, 119, 194),
        (188, 189, 34),
    ],
    dtype=np.float32,
)
_FOREGROUND = (0, 220, 0)
_BACKGROUND = (230, 0, 0)
_BOX = (255, 255, 255)


def draw_overlay(
    image: np.ndarray,
    masks: np.ndarray,
    alpha: float = 0.5,
    points: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    boxes: np.ndarray | None = None,
) -> np.ndarray:
    """The masks blended over the image, one `PALETTE` colour each, with the prompts on top.

    Args:
        image: (H, W, 3) uint8 RGB.
        masks: (N, H, W) bool masks, image frame.
        alpha: Mask opacity in [0, 1].
        points: (..., 2) XY point prompts, image frame, drawn as dots; None for none.
        labels: The points' labels in the same order (1 foreground green, 0 background red,
            negative: padding, not drawn); needed with `points`.
        boxes: (M, 4) XYXY box prompts, image frame, drawn as outlines; rows with NaN are skipped.

    Returns:
        (H, W, 3) uint8 RGB, a new array.
    """
    canvas = image.astype(np.float32)
    for index, mask in enumerate(masks):
        colour = PALETTE[index % len(PALETTE)]
        canvas[mask] = canvas[mask] * (1 - alpha) + colour * alpha
    overlay = Image.fromarray(np.clip(canvas + 0.5, 0, 255).astype(np.uint8))
    # Prompt marks grow with the image so they stay visible on large photos.
    radius = max(2, round(max(image.shape[:2]) / 150))
    draw = ImageDraw.Draw(overlay)
    if boxes is not None:
        for x1, y1, x2, y2 in boxes[np.isfinite(boxes).all(axis=1)].tolist():
            draw.rectangle((x1, y1, x2, y2), outline=_BOX, width=max(1, radius // 2))
    if points is not None and labels is not None:
        for (x, y), label in zip(points.reshape(-1, 2).tolist(), labels.reshape(-1).tolist()):
            if label < 0:
                continue
            fill = _FOREGROUND if label == 1 else _BACKGROUND
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=fill, outline=(255, 255, 255))
    return np.asarray(overlay)
