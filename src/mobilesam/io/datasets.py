"""Labeled datasets for validation: COCO instances, SA-1B per-image JSON, folders of PNG masks.

Every reader gives a `Dataset`: images in a fixed order, each with its
instances; an instance's mask is decoded only when asked for.

Formats, chosen by `load_dataset` from what `data` is:

- **COCO instances JSON** (a file with an "images" list): polygons,
  uncompressed RLE (counts as a list) and compressed RLE (counts as a string)
  are read; `iscrowd` annotations are skipped and counted. Polygons need
  their image's "height" and "width"; image files are `images / file_name`.
- **SA-1B** (a file with an "image" entry, or a folder of such ``*.json``
  files): one JSON per image, compressed RLE, class-agnostic (category
  "object"). Image files are `images / image["file_name"]`.
- **PNG instance masks** (a folder without JSON files): ``<stem>/<k>.png``,
  one mask per instance, nonzero pixels are the object — the layout
  `mobilesam predict --format png` writes. ``<stem>`` may hold subfolders
  (``cats/chelsea/000.png``) and names the image ``images/<stem>.<ext>``,
  the first extension of `PNG_IMAGE_SUFFIXES` (.jpg, .jpeg, .png, ...) that
  exists; all masks are category "object".

`images` defaults to the folder of `data` (the JSON's folder, or `data`
itself when it is a folder). An image file that does not exist is not an
error here: evaluation skips it and lists it in its report.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from ..masks import coco_decode_rle

# The category of class-agnostic datasets (SA-1B, PNG masks), as in our COCO writer.
OBJECT_CATEGORY = (1, "object")
# Image extensions tried, in order, for a PNG mask folder's `<stem>`.
PNG_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class DatasetError(ValueError):
    """A dataset file or folder that cannot be understood; the message names the file."""


@dataclass(frozen=True)
class Instance:
    """One annotated object.

    Attributes:
        instance_id: The annotation id (COCO, SA-1B) or the mask file's index in its folder (PNG).
        category_id: Category id; 1 ("object") for class-agnostic data.
        category_name: Category name; `str(category_id)` when the dataset names none.
        height: Image height the mask is drawn for.
        width: Image width the mask is drawn for.
        segmentation: COCO polygons (list of [x1, y1, x2, y2, ...]), an RLE dict
            (counts as list or str), or the Path of a PNG mask.
    """

    instance_id: int
    category_id: int
    category_name: str
    height: int
    width: int
    segmentation: list[list[float]] | dict[str, Any] | Path = field(repr=False)

    def mask(self) -> np.ndarray:
        """The (height, width) bool mask.

        Raises:
            DatasetError: The segmentation cannot be decoded or has another size.
        """
        try:
            mask = _decode(self.segmentation, self.height, self.width)
        except (OSError, ValueError, TypeError, KeyError) as err:
            raise DatasetError(f"instance {self.instance_id}: cannot decode its mask: {err}") from err
        if mask.shape != (self.height, self.width):
            raise DatasetError(
                f"instance {self.instance_id}: mask is {mask.shape[1]}x{mask.shape[0]}, expected {self.width}x{self.height}"
            )
        return mask


@dataclass(frozen=True)
class ImageAnnotations:
    """An image file and its instances.

    Attributes:
        path: The image file (it may not exist; evaluation checks).
        instances: The image's objects, crowd annotations left out.
    """

    path: Path
    instances: tuple[Instance, ...]


@dataclass(frozen=True)
class Dataset:
    """A labeled dataset.

    Attributes:
        source: The file or folder it was read from.
        kind: "coco", "sa1b" or "png".
        images: Images with at least one instance, in the dataset's order
            (COCO: the "images" list; SA-1B and PNG: sorted by file name).
        categories: category id -> name.
        skipped_crowd: `iscrowd` annotations left out.
    """

    source: Path
    kind: str
    images: tuple[ImageAnnotations, ...]
    categories: dict[int, str]
    skipped_crowd: int = 0

    def __len__(self) -> int:
        return len(self.images)

    def __iter__(self) -> Iterator[ImageAnnotations]:
        return iter(self.images)

    @property
    def num_instances(self) -> int:
        return sum(len(image.instances) for image in self.images)


def load_dataset(data: str | os.PathLike[str], images: str | os.PathLike[str] | None = None) -> Dataset:
    """Read a COCO JSON, an SA-1B JSON or folder of them, or a folder of PNG masks (see the module docstring).

    Args:
        data: The annotation file or folder.
        images: Folder the image file names are relative to; default: the folder of `data`.

    Raises:
        FileNotFoundError: `data` or `images` does not exist.
        DatasetError: The annotations cannot be understood, or hold no instances.
    """
    data = Path(data)
    if not data.exists():
        raise FileNotFoundError(f"dataset not found: {data}")
    root = Path(images) if images is not None else (data if data.is_dir() else data.parent)
    if not root.is_dir():
        raise FileNotFoundError(f"images folder not found: {root}")
    if data.is_file():
        document = _read_json(data)
        if isinstance(document, dict) and isinstance(document.get("images"), list):
            dataset = read_coco(data, root, document)
        elif isinstance(document, dict) and isinstance(document.get("image"), dict):
            dataset = read_sa1b([data], root, source=data)
        else:
            raise DatasetError(f"{data}: neither COCO instances (an 'images' list) nor SA-1B (an 'image' entry)")
    else:
        json_files = sorted(p for p in data.glob("*.json") if not p.name.startswith("."))
        dataset = read_sa1b(json_files, root, source=data) if json_files else read_png_masks(data, root)
    if dataset.num_instances == 0:
        crowd = f" ({dataset.skipped_crowd} crowd annotations skipped)" if dataset.skipped_crowd else ""
        raise DatasetError(f"{data}: no instances to evaluate{crowd}")
    return dataset


def read_coco(path: Path, images_root: Path, document: dict[str, Any] | None = None) -> Dataset:
    """Read a COCO instances file; `iscrowd` annotations are skipped and counted.

    Args:
        path: The JSON file.
        images_root: Folder that "file_name"s are relative to.
        document: The parsed file, when the caller has read it already.

    Raises:
        DatasetError: Missing keys, an annotation of an unknown image, or one without a segmentation.
    """
    document = _read_json(path) if document is None else document
    categories = {int(c["id"]): str(c.get("name", c["id"])) for c in document.get("categories", [])}
    image_entries: dict[Any, dict[str, Any]] = {}
    for entry in document["images"]:
        if not isinstance(entry, dict) or "id" not in entry or "file_name" not in entry:
            raise DatasetError(f"{path}: every image needs 'id' and 'file_name', got {entry!r:.120}")
        image_entries[entry["id"]] = entry
    per_image: dict[Any, list[Instance]] = {image_id: [] for image_id in image_entries}
    crowd = 0
    for annotation in document.get("annotations", []):
        image = image_entries.get(annotation.get("image_id"))
        if image is None:
            raise DatasetError(
                f"{path}: annotation {annotation.get('id')} refers to unknown image {annotation.get('image_id')!r}"
            )
        if annotation.get("iscrowd", 0):
            crowd += 1
            continue
        segmentation = annotation.get("segmentation")
        if not segmentation:
            raise DatasetError(f"{path}: annotation {annotation.get('id')} has no segmentation (val needs instance masks)")
        height, width = _image_size(image, segmentation, path)
        category_id = int(annotation.get("category_id", OBJECT_CATEGORY[0]))
        per_image[image["id"]].append(
            Instance(
                instance_id=int(annotation.get("id", len(per_image[image["id"]]) + 1)),
                category_id=category_id,
                category_name=categories.get(category_id, str(category_id)),
                height=height,
                width=width,
                segmentation=segmentation,
            )
        )
    annotated = tuple(
        ImageAnnotations(images_root / entry["file_name"], tuple(per_image[image_id]))
        for image_id, entry in image_entries.items()
        if per_image[image_id]
    )
    return Dataset(path, "coco", annotated, categories, skipped_crowd=crowd)


def read_sa1b(paths: Sequence[Path], images_root: Path, source: Path) -> Dataset:
    """Read SA-1B per-image JSON files (one image each, compressed RLE masks).

    Args:
        paths: The JSON files, in the order wanted.
        images_root: Folder that the images' "file_name"s are relative to.
        source: The file or folder named by the user, for the report.

    Raises:
        DatasetError: A file that is not SA-1B's per-image layout.
    """
    annotated = []
    for path in paths:
        document = _read_json(path)
        image = document.get("image") if isinstance(document, dict) else None
        if not isinstance(image, dict) or "file_name" not in image:
            raise DatasetError(f"{path}: not an SA-1B image file (needs an 'image' entry with 'file_name')")
        instances = []
        for index, annotation in enumerate(document.get("annotations", [])):
            rle = annotation.get("segmentation")
            if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
                raise DatasetError(f"{path}: annotation {annotation.get('id', index)} has no RLE segmentation")
            height, width = (int(v) for v in rle["size"])
            instances.append(
                Instance(int(annotation.get("id", index)), OBJECT_CATEGORY[0], OBJECT_CATEGORY[1], height, width, rle)
            )
        if instances:
            annotated.append(ImageAnnotations(images_root / image["file_name"], tuple(instances)))
    return Dataset(source, "sa1b", tuple(annotated), dict([OBJECT_CATEGORY]))


def read_png_masks(folder: Path, images_root: Path) -> Dataset:
    """Read a folder of `<stem>/<k>.png` instance masks (see the module docstring).

    Raises:
        DatasetError: No PNG masks in the folder.
    """
    per_stem: dict[str, list[Path]] = {}
    for mask_file in sorted(folder.rglob("*.png")):
        relative = mask_file.relative_to(folder)
        if len(relative.parts) < 2 or any(part.startswith(".") for part in relative.parts):
            continue
        per_stem.setdefault(relative.parent.as_posix(), []).append(mask_file)
    if not per_stem:
        raise DatasetError(
            f"{folder}: no annotations: expected a COCO/SA-1B JSON file, a folder of SA-1B JSON files, "
            "or PNG masks as <image stem>/<k>.png"
        )
    annotated = []
    for stem, mask_files in per_stem.items():
        instances = []
        for index, mask_file in enumerate(mask_files):
            width, height = _png_size(mask_file)
            instances.append(Instance(index, OBJECT_CATEGORY[0], OBJECT_CATEGORY[1], height, width, mask_file))
        annotated.append(ImageAnnotations(_find_image(images_root, stem), tuple(instances)))
    return Dataset(folder, "png", tuple(annotated), dict([OBJECT_CATEGORY]))


def _find_image(root: Path, stem: str) -> Path:
    """`root/<stem>.<ext>` for the first extension that exists; the first candidate when none does."""
    candidates = [root / f"{stem}{suffix}" for suffix in PNG_IMAGE_SUFFIXES]
    return next((path for path in candidates if path.is_file()), candidates[0])


def _png_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as image:
            return image.size
    except OSError as err:
        raise DatasetError(f"cannot read mask {path}: {err}") from err


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DatasetError(f"cannot read {path}: {err}") from err


def _image_size(image: dict[str, Any], segmentation: Any, path: Path) -> tuple[int, int]:
    """(H, W) of an annotation: the image's height/width, or an RLE's own size."""
    if "height" in image and "width" in image:
        return int(image["height"]), int(image["width"])
    if isinstance(segmentation, dict) and "size" in segmentation:
        height, width = segmentation["size"]
        return int(height), int(width)
    raise DatasetError(f"{path}: image {image['id']!r} needs 'height' and 'width' to draw polygon annotations")


def _decode(segmentation: list[list[float]] | dict[str, Any] | Path, height: int, width: int) -> np.ndarray:
    if isinstance(segmentation, Path):
        with Image.open(segmentation) as image:
            return np.asarray(image.convert("L")) > 0
    if isinstance(segmentation, list):
        # Polygons: one RLE per part, merged into one mask.
        rles = mask_utils.frPyObjects([list(map(float, polygon)) for polygon in segmentation], height, width)
        return mask_utils.decode(mask_utils.merge(rles)).astype(bool)
    if isinstance(segmentation.get("counts"), list):
        rle = mask_utils.frPyObjects(segmentation, *segmentation["size"])
        return mask_utils.decode(rle).astype(bool)
    return coco_decode_rle(segmentation)
