"""Object-aware prompts (MobileSAMv2's way): box prompts from a detector or a boxes file instead of a point grid.

A YOLO detector (any Ultralytics detection or segmentation checkpoint or YAML,
through the optional `ultralytics` package) or a JSON file gives each image its
boxes; each box is one object, decoded as a box prompt with one mask
(`mobilesam.segment.segment_prompts`), then de-duplicated with the grid's box
NMS and sorted by score. The detector's class ids stay with the masks
(`Results.classes`).

Boxes file (`read_boxes_file`): a JSON object mapping an image to its boxes::

    {"dog.jpg": [[x1, y1, x2, y2], ...],
     "street/cars": [{"box": [x1, y1, x2, y2], "class": 2}, ...]}

A key is the image's path, or its trailing parts with or without the suffix
("cars.jpg", "street/cars"); boxes are XYXY pixels of the original image. An
entry is either a bare box or {"box": ..., "class": int}; classes are given for
every box of the file or for none.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import torch
from PIL import Image

from .embedding import ImageEmbedding
from .masks import batched_nms
from .predictor import SamPredictor
from .prompts import check_in_image, make_prompt
from .results import Results
from .segment import segment_prompts

DETECTOR_EXTRA = "pip install 'mobilesam[detector]'"


@dataclass(frozen=True)
class DetectorOptions:
    """Settings passed through to Ultralytics' `YOLO.predict`.

    Attributes:
        conf: Smallest detection confidence kept.
        iou: The detector's own NMS IoU threshold.
        imgsz: The detector's input size in pixels.
        max_det: Most boxes per image.
        classes: Keep only these class ids; None keeps all.
        device: Torch device of the detector ("cpu", "cuda", "0"); "" lets Ultralytics choose.
    """

    conf: float = 0.25
    iou: float = 0.7
    imgsz: int = 640
    max_det: int = 300
    classes: tuple[int, ...] | None = None
    device: str = ""


@dataclass(frozen=True)
class Detections:
    """The boxes of one image, each an object to segment.

    Attributes:
        boxes: (N, 4) float64 XYXY pixels of the original image.
        classes: (N,) int64 class id of each box, or None when the boxes have no class.
        names: Class id -> name, from the detector; None for a boxes file.
    """

    boxes: np.ndarray
    classes: np.ndarray | None = None
    names: dict[int, str] | None = None


class Detector:
    """An Ultralytics YOLO model that gives `Detections` for RGB images.

    Args:
        model: A YOLO checkpoint or YAML (detection or segmentation), path or Ultralytics name.
        options: The `YOLO.predict` settings.

    Raises:
        ImportError: Ultralytics is not installed.
    """

    def __init__(self, model: str | os.PathLike[str], options: DetectorOptions = DetectorOptions()) -> None:
        pillow_open = Image.open
        try:
            from ultralytics import YOLO
        except ImportError as err:
            raise ImportError(f"detector prompts need Ultralytics: {DETECTOR_EXTRA} ({err})") from err
        finally:
            # Importing Ultralytics replaces PIL.Image.open with one that, on a file Pillow cannot
            # identify, installs and registers pi-heif: an unreadable image must stay our clear error.
            Image.open = pillow_open
        self.model = YOLO(os.fspath(model))
        self.options = options

    def __call__(self, image: np.ndarray) -> Detections:
        """The boxes YOLO finds in `image`, an (H, W, 3) uint8 RGB array."""
        options = self.options
        # Ultralytics reads numpy images as BGR, as OpenCV gives them.
        (found,) = self.model.predict(
            np.ascontiguousarray(image[..., ::-1]),
            conf=options.conf,
            iou=options.iou,
            imgsz=options.imgsz,
            max_det=options.max_det,
            classes=None if options.classes is None else list(options.classes),
            device=options.device or None,
            verbose=False,
        )
        boxes = found.boxes
        return Detections(
            boxes=boxes.xyxy.cpu().numpy().astype(np.float64).reshape(-1, 4),
            classes=boxes.cls.cpu().numpy().astype(np.int64).reshape(-1),
            names={int(k): str(v) for k, v in found.names.items()},
        )


def segment_detections(
    predictor: SamPredictor,
    embedding: ImageEmbedding[torch.Tensor] | None,
    detections: Detections,
    image: np.ndarray,
    *,
    box_nms_thresh: float | None = 0.7,
    path: str | None = None,
) -> Results:
    """One mask per box of `detections`, de-duplicated by box NMS and sorted by score, best first.

    Args:
        predictor: Whose backend decodes the boxes.
        embedding: The image's embedding (`SamPredictor.embed`); None only when there are no boxes,
            so that an image without detections costs no embedding.
        detections: The boxes and their classes.
        image: (H, W, 3) uint8 RGB pixels of the embedded image.
        box_nms_thresh: Mask-box IoU above which the weaker of two masks is dropped (class-agnostic,
            as the point grid's); None keeps every mask.
        path: The image's path, for `Results`.

    Raises:
        ValueError: A box outside the image, or not X1 <= X2, Y1 <= Y2; boxes without an embedding.
    """
    h, w = image.shape[:2]
    if len(detections.boxes) == 0:
        empty = np.zeros(0, np.int64) if detections.classes is not None else None
        return Results(image, np.zeros((0, h, w), bool), np.zeros(0, np.float32), path=path, classes=empty)
    if embedding is None:
        raise ValueError("boxes need the image's embedding: pass predictor.embed(image)")
    prompts = [make_prompt(box=box) for box in detections.boxes]
    for prompt in prompts:
        check_in_image(prompt, (h, w))
    result = segment_prompts(predictor, embedding, prompts, image, multimask_output=False, path=path)
    if detections.classes is not None:
        # The boxes are rebuilt so that `Boxes.cls` carries the classes.
        result = dataclasses.replace(result, boxes=np.asarray(result.boxes), classes=detections.classes, names=detections.names)
    scores = torch.from_numpy(result.scores)
    if box_nms_thresh is None:
        keep = torch.argsort(scores, descending=True, stable=True)
    else:
        boxes = torch.from_numpy(np.asarray(result.boxes, dtype=np.float32))
        keep = batched_nms(boxes, scores, torch.zeros(len(scores), dtype=torch.int64), box_nms_thresh)
    return result[keep.numpy()]


def read_boxes_file(path: str | os.PathLike[str]) -> dict[str, Detections]:
    """The boxes file at `path` (format in this module's docstring): image key -> its boxes.

    Raises:
        OSError: The file cannot be read.
        ValueError: Not valid JSON of that layout.
    """
    try:
        table = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"boxes file {path}: not valid JSON ({err})") from None
    if not isinstance(table, dict):
        raise ValueError(f"boxes file {path}: expected an object mapping image names to boxes, got {type(table).__name__}")
    parsed = {str(key): _parse_entries(path, str(key), entries) for key, entries in table.items()}
    with_classes = {entry.classes is not None for entry in parsed.values() if len(entry.boxes)}
    if len(with_classes) > 1:
        raise ValueError(f"boxes file {path}: give a class for every box or for none")
    if with_classes == {True}:
        parsed = {
            key: entry if entry.classes is not None else dataclasses.replace(entry, classes=np.zeros(0, np.int64))
            for key, entry in parsed.items()
        }
    return parsed


def boxes_for_image(table: dict[str, Detections], image_path: str) -> Detections:
    """The entry of `table` for the image at `image_path`: the longest matching trailing path, with or without suffix.

    Raises:
        ValueError: No entry names this image.
    """
    parts = PurePath(image_path).parts
    for count in range(len(parts), 0, -1):
        tail = PurePath(*parts[-count:])
        for key in (tail.as_posix(), tail.with_suffix("").as_posix()):
            if key in table:
                return table[key]
    raise ValueError(f"the boxes file has no entry for {image_path} (keys are image names or stems, e.g. {parts[-1]!r})")


def _parse_entries(path: str | os.PathLike[str], key: str, entries: Any) -> Detections:
    where = f"boxes file {path}, {key!r}"
    if not isinstance(entries, list):
        raise ValueError(f"{where}: expected a list of boxes, got {type(entries).__name__}")
    boxes, classes = [], []
    for entry in entries:
        box = entry.get("box") if isinstance(entry, dict) else entry
        if isinstance(entry, dict):
            unknown = set(entry) - {"box", "class"}
            if unknown or "box" not in entry:
                raise ValueError(f"{where}: a box object has keys 'box' and optionally 'class', got {sorted(entry)}")
            if "class" in entry:
                if not isinstance(entry["class"], int) or isinstance(entry["class"], bool) or entry["class"] < 0:
                    raise ValueError(f"{where}: 'class' must be an integer >= 0, got {entry['class']!r}")
                classes.append(entry["class"])
        try:
            corners = np.asarray(box, dtype=np.float64)
        except (TypeError, ValueError):
            corners = np.empty(0)
        if corners.shape != (4,) or not np.isfinite(corners).all():
            raise ValueError(f"{where}: a box must be [x1, y1, x2, y2] (numbers), got {box!r}")
        boxes.append(corners)
    if classes and len(classes) != len(boxes):
        raise ValueError(f"{where}: give a class for every box or for none")
    return Detections(
        boxes=np.array(boxes, dtype=np.float64).reshape(-1, 4),
        classes=np.array(classes, dtype=np.int64) if classes else None,
    )
