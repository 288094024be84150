"""`Results`: the masks of one image with their boxes, scores and prompts (Ultralytics style)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from .io.atomic import atomic_path, write_text_atomic
from .masks import batched_mask_to_box, coco_encode_rle, mask_to_rle

# Distinct, colour-blind friendly (Okabe-Ito, then Tableau) RGB colours for masks.
PALETTE = np.array(
    [
        (230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66), (0, 114, 178),
        (213, 94, 0), (204, 121, 167), (31, 119, 180), (255, 127, 14), (44, 160, 44),
        (214, 39, 40), (148, 103, 189), (140, 86, 75), (227, 119, 194), (188, 189, 34),
    ],
    dtype=np.float32,
)
_FOREGROUND = (0, 220, 0)
_BACKGROUND = (230, 0, 0)
_BOX = (255, 255, 255)


@dataclass
class Results:
    """Masks for one image.

    Attributes:
        orig_img: (H, W, 3) uint8 RGB image the masks belong to.
        masks: (N, H, W) bool.
        scores: (N,) float32 predicted IoU of each mask.
        boxes: (N, 4) float32 XYXY boxes around the masks (zeros for an empty mask).
        points: (N, P, 2) XY point prompts per mask, or None.
        labels: (N, P) labels of those points (1 foreground, 0 background, -1 padding
            where masks had fewer than P points), or None.
        bboxes: (N, 4) XYXY box prompts per mask (NaN for a mask without one), or None.
        path: Where the image came from, if it was a file or URL.
    """

    orig_img: np.ndarray
    masks: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray | None = None
    points: np.ndarray | None = None
    labels: np.ndarray | None = None
    bboxes: np.ndarray | None = None
    path: str | None = None

    def __post_init__(self) -> None:
        if self.boxes is None:
            self.boxes = batched_mask_to_box(torch.from_numpy(self.masks)).numpy().astype(np.float32).reshape(-1, 4)

    @classmethod
    def from_mask_records(cls, image: np.ndarray, records: list[dict], path: str | None = None) -> Results:
        """Results of segment everything: `SamAutomaticMaskGenerator.generate` records in binary_mask mode.

        Each mask keeps the grid point that produced it as its (foreground) prompt.
        """
        h, w = image.shape[:2]
        if not records:
            return cls(orig_img=image, masks=np.zeros((0, h, w), bool), scores=np.zeros(0, np.float32), path=path)
        return cls(
            orig_img=image,
            masks=np.stack([record["segmentation"] for record in records]),
            scores=np.array([record["predicted_iou"] for record in records], dtype=np.float32),
            points=np.array([record["point_coords"] for record in records], dtype=np.float64).reshape(-1, 1, 2),
            labels=np.ones((len(records), 1), dtype=np.int64),
            path=path,
        )

    def __len__(self) -> int:
        return len(self.masks)

    @property
    def orig_shape(self) -> tuple[int, int]:
        """(H, W) of the image."""
        return self.orig_img.shape[:2]

    def areas(self) -> np.ndarray:
        """(N,) number of pixels in each mask."""
        return self.masks.reshape(len(self.masks), -1).sum(axis=1)

    def prompt(self, index: int) -> dict:
        """The prompt behind mask `index` as JSON-ready lists: "points" and "labels" and/or "box" (absent when unused)."""
        prompt: dict = {}
        if self.points is not None and self.labels is not None:
            labels = self.labels[index].reshape(-1)
            used = labels >= 0
            if used.any():
                prompt["points"] = self.points[index].reshape(-1, 2)[used].tolist()
                prompt["labels"] = labels[used].astype(int).tolist()
        if self.bboxes is not None and np.isfinite(self.bboxes[index]).all():
            prompt["box"] = self.bboxes[index].reshape(4).tolist()
        return prompt

    def plot(self, alpha: float = 0.5, draw_prompts: bool = True) -> np.ndarray:
        """Overlay of the masks (one colour each) and the prompts on the image: (H, W, 3) uint8 RGB."""
        canvas = self.orig_img.astype(np.float32)
        for index, mask in enumerate(self.masks):
            colour = PALETTE[index % len(PALETTE)]
            canvas[mask] = canvas[mask] * (1 - alpha) + colour * alpha
        image = Image.fromarray(np.clip(canvas + 0.5, 0, 255).astype(np.uint8))
        if draw_prompts:
            self._draw_prompts(ImageDraw.Draw(image), max(2, round(max(self.orig_shape) / 150)))
        return np.asarray(image)

    def _draw_prompts(self, draw: ImageDraw.ImageDraw, radius: int) -> None:
        if self.bboxes is not None:
            for x1, y1, x2, y2 in self.bboxes[np.isfinite(self.bboxes).all(axis=1)].tolist():
                draw.rectangle((x1, y1, x2, y2), outline=_BOX, width=max(1, radius // 2))
        if self.points is not None and self.labels is not None:
            for (x, y), label in zip(self.points.reshape(-1, 2).tolist(), self.labels.reshape(-1).tolist()):
                if label < 0:
                    continue
                fill = _FOREGROUND if label == 1 else _BACKGROUND
                draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=fill, outline=(255, 255, 255))

    def save(self, filename: str | os.PathLike[str], alpha: float = 0.5) -> Path:
        """Write `plot()` to an image file (format from the suffix), atomically."""
        target = Path(filename)
        with atomic_path(target) as tmp:
            Image.fromarray(self.plot(alpha)).save(tmp, format=Image.registered_extensions().get(target.suffix.lower()))
        return target

    def to_dict(self) -> dict:
        """JSON-ready summary: image size and, per mask, COCO RLE, box, score and area."""
        rles = mask_to_rle(torch.from_numpy(self.masks)) if len(self.masks) else []
        h, w = self.orig_shape
        return {
            "path": self.path,
            "height": h,
            "width": w,
            "masks": [
                {
                    "segmentation": coco_encode_rle(rle),
                    "bbox_xyxy": box.tolist(),
                    "score": float(score),
                    "area": int(area),
                }
                for rle, box, score, area in zip(rles, self.boxes, self.scores, self.areas())
            ],
        }

    def to_json(self, indent: int | None = None) -> str:
        """`to_dict()` as a JSON string."""
        return json.dumps(self.to_dict(), indent=indent)

    def save_json(self, filename: str | os.PathLike[str]) -> Path:
        """Write `to_json()` atomically."""
        return write_text_atomic(filename, self.to_json())
