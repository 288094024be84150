"""The validation report: per-protocol results, JSON, the console table (its plot: `mobilesam.val.plot`)."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..atomic import write_text_atomic

SIZES = ("small", "medium", "large")


@dataclass(frozen=True)
class Calibration:
    """How well the model's predicted IoU matches the actual IoU of its final masks.

    Attributes:
        mean_predicted_iou: Mean of the model's predicted IoU.
        mean_actual_iou: Mean IoU with the ground truth, over the same masks.
        mean_abs_gap: Mean of |predicted - actual| per mask.
        count: Masks counted (``everything`` leaves out objects it found no mask for).
    """

    mean_predicted_iou: float
    mean_actual_iou: float
    mean_abs_gap: float
    count: int


@dataclass(frozen=True)
class ProtocolResult:
    """One protocol's results over all instances.

    Attributes:
        protocol: Its name ("box", "point", "clicks:5", ...).
        count: Instances scored.
        miou: Mean IoU with the ground truth (after the last click for ``clicks:K``).
        per_category: Category name -> mIoU.
        per_size: "small" / "medium" / "large" -> mIoU, None where no instance has that size.
        size_counts: Instances of each size.
        calibration: Predicted vs actual IoU; None when no mask was predicted.
        per_click: ``clicks:K``: mIoU after clicks 1..K.
        teacher_miou: Mean IoU of the student's masks with the teacher's, when a teacher ran.
        teacher_per_click: ``clicks:K`` with a teacher: that mean after each click.
    """

    protocol: str
    count: int
    miou: float
    per_category: dict[str, float]
    per_size: dict[str, float | None]
    size_counts: dict[str, int]
    calibration: Calibration | None
    per_click: list[float] | None = None
    teacher_miou: float | None = None
    teacher_per_click: list[float] | None = None


@dataclass(frozen=True)
class ValReport:
    """What `mobilesam.val.evaluate` measured.

    Attributes:
        model: The model evaluated (path or name).
        teacher: The teacher model, or None.
        data: The dataset file or folder.
        dataset_kind: "coco", "sa1b" or "png".
        images: Images evaluated.
        instances: Ground-truth instances evaluated.
        protocols: Protocol name -> results, in the order asked.
        seed: Seed of the box jitter.
        points_per_side: Grid of the ``everything`` protocol, None when it did not run.
        skipped_images: (image path, reason) for images that could not be evaluated.
        skipped_crowd: `iscrowd` annotations left out.
        skipped_empty: Instances with an empty mask, left out.
        seconds: Wall time.
    """

    model: str
    teacher: str | None
    data: str
    dataset_kind: str
    images: int
    instances: int
    protocols: dict[str, ProtocolResult]
    seed: int
    points_per_side: int | None
    skipped_images: list[tuple[str, str]]
    skipped_crowd: int
    skipped_empty: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        document = dataclasses.asdict(self)
        document["skipped_images"] = [{"image": path, "reason": reason} for path, reason in self.skipped_images]
        return document

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write `to_dict()` as JSON, atomically; `mobilesam.val.plot.save_report` adds the plot beside it.

        Args:
            path: The JSON file.

        Returns:
            `path` as a Path.
        """
        return write_text_atomic(path, json.dumps(self.to_dict(), indent=2) + "\n")

    def table(self) -> str:
        """The results as a text table, with the mIoU after each click below it for ``clicks:K``."""
        header = ["protocol", "instances", "mIoU", *SIZES] + (["teacher"] if self.teacher is not None else [])
        rows = []
        for result in self.protocols.values():
            row = [result.protocol, str(result.count), _number(result.miou), *(_number(result.per_size[s]) for s in SIZES)]
            if self.teacher is not None:
                row.append(_number(result.teacher_miou))
            rows.append(row)
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
        # The protocol column is left-aligned, the numbers right-aligned.
        lines = [
            "  ".join([row[0].ljust(widths[0]), *(cell.rjust(w) for cell, w in zip(row[1:], widths[1:]))])
            for row in [header, *rows]
        ]
        for result in self.protocols.values():
            if result.per_click:
                lines.append(f"{result.protocol} IoU after each click: " + " ".join(_number(v) for v in result.per_click))
        return "\n".join(lines)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
