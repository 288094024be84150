"""COCO instance annotations with compressed RLE masks: one document per image, merged into a dataset."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..atomic import write_text_atomic
from ..masks import encode_masks

if TYPE_CHECKING:
    from ..results import Results

# Promptable segmentation is class-agnostic: every mask is one generic "object".
CATEGORIES = [{"id": 1, "name": "object", "supercategory": "object"}]


def coco_document(result: Results, file_name: str, image_id: int = 1) -> dict[str, Any]:
    """COCO instance-segmentation document for one image.

    One annotation per mask, in mask order (annotation id i + 1 is mask i), so
    an empty mask is kept, with area 0. Besides the standard keys each
    annotation has "score" (the predicted IoU) and "prompt" (`result.prompt(i)`).

    Args:
        result: Masks of one image.
        file_name: The image's "file_name", relative to the dataset's image folder.
        image_id: The image's id.

    Returns:
        A JSON-ready dict with "images", "annotations" and "categories".
    """
    h, w = result.orig_shape
    annotations = [
        {
            "id": index + 1,
            "image_id": image_id,
            "category_id": 1,
            "segmentation": mask.rle,
            "area": mask.area,
            # XYWH with width and height counted in pixels (x2 - x1 + 1), as COCO tools expect.
            "bbox": mask.coco_bbox,
            "iscrowd": 0,
            "score": mask.score,
            "prompt": result.prompt(index),
        }
        for index, mask in enumerate(encode_masks(np.asarray(result.masks), result.scores))
    ]
    return {
        "images": [{"id": image_id, "file_name": file_name, "height": h, "width": w}],
        "annotations": annotations,
        "categories": CATEGORIES,
    }


def write_coco(result: Results, path: str | os.PathLike[str], file_name: str, image_id: int = 1) -> Path:
    """Write `coco_document(result, file_name, image_id)` to `path` as JSON, atomically.

    Args:
        result: Masks of one image.
        path: JSON file to write.
        file_name: The image's "file_name", relative to the dataset's image folder.
        image_id: The image's id.

    Returns:
        `path` as a Path.
    """
    return write_text_atomic(path, json.dumps(coco_document(result, file_name, image_id)))


def merge_coco(paths: Iterable[str | os.PathLike[str]], target: str | os.PathLike[str]) -> Path:
    """Combine COCO documents into one dataset file, written atomically.

    Images and annotations keep the order of `paths` and are renumbered 1..n
    and 1..m; each annotation follows its image to the new id.

    Args:
        paths: COCO JSON files, e.g. the per-image files of `write_coco`.
        target: The dataset file to write.

    Returns:
        `target` as a Path.

    Raises:
        ValueError: Two documents define the same category id differently.
    """
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    categories: dict[int, dict[str, Any]] = {}
    for path in paths:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
        # Image ids are only unique within one document, so the map is per document.
        new_image_ids = {}
        for image in document["images"]:
            new_image_ids[image["id"]] = len(images) + 1
            images.append({**image, "id": len(images) + 1})
        for annotation in document["annotations"]:
            annotations.append({**annotation, "id": len(annotations) + 1, "image_id": new_image_ids[annotation["image_id"]]})
        for category in document["categories"]:
            known = categories.setdefault(category["id"], category)
            if known != category:
                raise ValueError(f"{path}: category {category} conflicts with {known} from an earlier file")
    dataset = {
        "images": images,
        "annotations": annotations,
        "categories": list(categories.values()) or CATEGORIES,
    }
    return write_text_atomic(target, json.dumps(dataset))
