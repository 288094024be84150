"""YOLO-seg (Ultralytics) label files: one normalised polygon per mask."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..atomic import write_text_atomic
from ..masks import mask_to_polygons

if TYPE_CHECKING:
    from ..results import Results


def yolo_seg_lines(result: Results, class_id: int | None = None) -> list[str]:
    """Label lines `class x1 y1 x2 y2 ...` with XY divided by the image width and height.

    A YOLO-seg line holds exactly one polygon, so a mask in several parts
    keeps only its largest part (bridging the parts with zero-width seams, as
    Ultralytics' COCO converter does, would change the outline's topology).
    Empty masks, and masks whose parts are all thinner than a polygon, get no
    line, so line numbers need not match mask indices.

    Args:
        result: Masks of one image.
        class_id: Class index written at the start of every line; None: each mask's
            `Results.classes` (the detector's class ids) when it has them, else 0.

    Returns:
        One line per kept mask, without newlines; coordinates in [0, 1], 6 decimals.

    Raises:
        ValueError: `class_id` is negative.
    """
    if class_id is not None and class_id < 0:
        raise ValueError(f"class_id must be >= 0, got {class_id}")
    if class_id is None and result.classes is not None:
        class_ids = [int(c) for c in result.classes]
    else:
        class_ids = [class_id or 0] * len(result.masks)
    h, w = result.orig_shape
    lines = []
    for mask, number in zip(result.masks, class_ids):
        polygons = mask_to_polygons(mask)
        if not polygons:
            continue
        xy = np.clip(polygons[0] / (w, h), 0.0, 1.0)
        lines.append(" ".join([str(number), *(f"{value:.6f}" for value in xy.reshape(-1))]))
    return lines


def write_yolo_seg(result: Results, path: str | os.PathLike[str], class_id: int | None = None) -> Path:
    """Write `yolo_seg_lines(result, class_id)` to `path` atomically; an empty file when no mask has a polygon.

    Args:
        result: Masks of one image.
        path: Label file to write.
        class_id: Class index written at the start of every line; None: the masks' own (see `yolo_seg_lines`).

    Returns:
        `path` as a Path.
    """
    return write_text_atomic(path, "".join(f"{line}\n" for line in yolo_seg_lines(result, class_id)))
