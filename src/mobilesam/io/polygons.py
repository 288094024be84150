"""Mask outlines as polygons, shared by the YOLO-seg and LabelMe writers."""

from __future__ import annotations

import cv2
import numpy as np


def mask_to_polygons(mask: np.ndarray) -> list[np.ndarray]:
    """Outer outlines of the parts of a mask, largest part first.

    Holes are not traced: both YOLO-seg and LabelMe polygons are filled
    outlines. Vertices are the centres of the boundary pixels (OpenCV's
    convention, the one Ultralytics and LabelMe rasterise back from), with
    collinear runs collapsed (`CHAIN_APPROX_SIMPLE`).

    Args:
        mask: (H, W) bool or 0/1 mask.

    Returns:
        One (K, 2) float64 XY array per external contour with K >= 3 (fewer
        points enclose no area), sorted by enclosed area, descending. Empty for
        an empty mask.
    """
    contours, _ = cv2.findContours(
        np.ascontiguousarray(mask, dtype=np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
    )
    polygons = [contour.reshape(-1, 2).astype(np.float64) for contour in contours if len(contour) >= 3]
    return sorted(polygons, key=lambda polygon: -cv2.contourArea(polygon.astype(np.float32)))
