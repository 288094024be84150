"""Mask quality numbers: IoU, matching generated masks to ground truth, and per-protocol summaries.

IoU is |pred & gt| / |pred | gt|, and 1 when both masks are empty. mIoU is
the plain mean over instances. Sizes follow COCO, by the ground-truth
mask's area: small < 32², medium < 96², large otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from .report import Calibration, ProtocolResult

SIZE_LIMITS = (("small", 32**2), ("medium", 96**2), ("large", float("inf")))


@dataclass(frozen=True)
class InstanceScore:
    """How one protocol did on one instance.

    Attributes:
        category: The instance's category name.
        area: Ground-truth mask area in pixels.
        ious: IoU with the ground truth after each click (one value for single-prompt protocols).
        predicted_iou: The model's own estimate for the final mask; None when there is no mask.
        teacher_ious: IoU with the teacher's mask after each click, when a teacher ran.
    """

    category: str
    area: int
    ious: tuple[float, ...]
    predicted_iou: float | None
    teacher_ious: tuple[float, ...] | None = None


def match_masks(candidates: Sequence[dict[str, Any]], gts: Sequence[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """For each ground truth, the candidate with the highest IoU.

    Args:
        candidates: COCO RLEs of the generated masks (M of them, M may be 0).
        gts: COCO RLEs of the ground-truth masks (N of them).

    Returns:
        (N,) int index of the best candidate (-1 when there is none) and (N,) float its IoU (0 when none);
        the first candidate wins ties.
    """
    if not candidates:
        return np.full(len(gts), -1), np.zeros(len(gts))
    ious = np.asarray(mask_utils.iou(list(candidates), list(gts), [0] * len(gts)))  # (M, N)
    best = ious.argmax(axis=0)
    return best, ious[best, np.arange(len(gts))]


def rle_iou(a: dict[str, Any] | None, b: dict[str, Any] | None) -> float:
    """IoU of two COCO RLEs, None meaning an empty mask (two empty masks: 1.0)."""
    if a is None or b is None:
        return 1.0 if a is b else 0.0
    return float(np.asarray(mask_utils.iou([a], [b], [0]))[0, 0])


def size_bucket(area: int) -> str:
    """COCO size of a mask area: "small", "medium" or "large"."""
    return next(name for name, limit in SIZE_LIMITS if area < limit)


def summarize(protocol: str, scores: Sequence[InstanceScore], per_click: bool = False) -> ProtocolResult:
    """Aggregate one protocol's instance scores.

    Args:
        protocol: The protocol's name.
        scores: One score per instance (at least one).
        per_click: Report the mIoU after each click (``clicks:K``).

    Raises:
        ValueError: No scores.
    """
    if not scores:
        raise ValueError(f"no instances were scored for {protocol}")
    final = np.array([score.ious[-1] for score in scores])
    categories: dict[str, list[float]] = {}
    sizes: dict[str, list[float]] = {name: [] for name, _ in SIZE_LIMITS}
    for score, iou in zip(scores, final):
        categories.setdefault(score.category, []).append(float(iou))
        sizes[size_bucket(score.area)].append(float(iou))
    teacher = [score.teacher_ious for score in scores if score.teacher_ious is not None]
    return ProtocolResult(
        protocol=protocol,
        count=len(scores),
        miou=float(final.mean()),
        per_category={name: float(np.mean(categories[name])) for name in sorted(categories)},
        per_size={name: float(np.mean(values)) if values else None for name, values in sizes.items()},
        size_counts={name: len(values) for name, values in sizes.items()},
        calibration=_calibration(scores),
        per_click=np.mean([score.ious for score in scores], axis=0).tolist() if per_click else None,
        teacher_miou=float(np.mean([ious[-1] for ious in teacher])) if teacher else None,
        teacher_per_click=np.mean(teacher, axis=0).tolist() if teacher and per_click else None,
    )


def _calibration(scores: Sequence[InstanceScore]) -> Calibration | None:
    """Predicted vs actual IoU of the final masks, over the instances that have a mask."""
    pairs = np.array([(score.predicted_iou, score.ious[-1]) for score in scores if score.predicted_iou is not None])
    if len(pairs) == 0:
        return None
    return Calibration(
        mean_predicted_iou=float(pairs[:, 0].mean()),
        mean_actual_iou=float(pairs[:, 1].mean()),
        mean_abs_gap=float(np.abs(pairs[:, 0] - pairs[:, 1]).mean()),
        count=len(pairs),
    )
