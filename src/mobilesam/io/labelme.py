"""LabelMe JSON annotations (also read by AnyLabeling/X-AnyLabeling): polygons per mask."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..atomic import write_text_atomic
from ..masks import mask_to_polygons

if TYPE_CHECKING:
    from ..results import Results

# The LabelMe file format version written; 5.x readers accept it.
LABELME_VERSION = "5.4.1"


def labelme_document(result: Results, image_path: str) -> dict[str, Any]:
    """LabelMe document for one image: one "object" polygon per outer outline of each mask.

    A mask in several parts gives several shapes sharing `group_id` = the mask
    index, so LabelMe treats them as one object. Holes are filled; empty masks
    give no shape.

    Args:
        result: Masks of one image.
        image_path: "imagePath" as written: the image relative to the JSON file's folder.

    Returns:
        A JSON-ready dict in LabelMe's format, without embedded image data.
    """
    h, w = result.orig_shape
    shapes = [
        {
            "label": "object",
            "points": polygon.tolist(),
            "group_id": index,
            "description": "",
            "shape_type": "polygon",
            "flags": {},
            "mask": None,
        }
        for index, mask in enumerate(result.masks)
        for polygon in mask_to_polygons(mask)
    ]
    return {
        "version": LABELME_VERSION,
        "flags": {},
        "shapes": shapes,
        "imagePath": image_path,
        "imageData": None,
        "imageHeight": h,
        "imageWidth": w,
    }


def write_labelme(result: Results, path: str | os.PathLike[str], image_path: str | os.PathLike[str] | None = None) -> Path:
    """Write the LabelMe document of `result` to `path`, atomically.

    "imagePath" is `result.path` relative to the JSON file's folder, which is
    how LabelMe finds the image. When the image has no local file (an array,
    or a URL) `image_path` is written instead, unchanged.

    Args:
        result: Masks of one image.
        path: JSON file to write.
        image_path: Fallback "imagePath" for images without a local file.

    Returns:
        `path` as a Path.

    Raises:
        ValueError: The image has no local file and `image_path` is None.
    """
    target = Path(path)
    if result.path is not None and "://" not in result.path:
        try:
            relative = os.path.relpath(os.path.abspath(result.path), os.path.abspath(target.parent))
        except ValueError:  # another drive on Windows: no relative path exists
            relative = os.path.abspath(result.path)
        written = Path(relative).as_posix()
    elif image_path is not None:
        written = os.fspath(image_path)
    else:
        raise ValueError(f"{target}: the image has no local file; pass image_path for LabelMe's imagePath")
    return write_text_atomic(target, json.dumps(labelme_document(result, written), indent=2))
