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
  the first extension of `IMAGE_SUFFIXES` (.jpg, .jpeg, .png, ...) that
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

from ..errors import DatasetError
from ..masks import coco_decode_rle
from .images import IMAGE_SUFFIXES

# The category of class-agnostic datasets (SA-1B, PNG masks), as in our COCO writer.
OBJECT_CATEGORY = (1, "object")
# The largest mask size accepted, in pixels (16384 x 16384, 256 MiB decoded): a larger one is
# taken for a corrupt file rather than allocated. PIL refuses images over 179M pixels by default.
MAX_MASK_PIXELS = 1 << 28


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
        except (OSError, ValueError, TypeError, KeyError, Image.DecompressionBombError) as err:
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
        DatasetError: Missing keys or values of the wrong type, an annotation of an unknown image,
            or one without a segmentation.
    """
    document = _read_json(path) if document is None else document
    if not isinstance(document, dict) or not isinstance(document.get("images"), list):
        raise DatasetError(f"{path}: not COCO instances (needs an 'images' list)")
    categories = {}
    for category in _objects(document, "categories", path):
        category_id = _integer(category.get("id"), f"{path}: category 'id'")
        categories[category_id] = str(category.get("name", category_id))
    image_entries: dict[int | str, dict[str, Any]] = {}
    for entry in document["images"]:
        if not isinstance(entry, dict) or not _is_id(entry.get("id")) or not _is_file_name(entry.get("file_name")):
            raise DatasetError(
                f"{path}: every image needs 'id' and 'file_name' (an integer or string, a path), got {entry!r:.120}"
            )
        image_entries[entry["id"]] = entry
    per_image: dict[int | str, list[Instance]] = {image_id: [] for image_id in image_entries}
    crowd = 0
    for index, annotation in enumerate(_objects(document, "annotations", path)):
        where = f"{path}: annotation {annotation.get('id', index)!s:.40}"
        image_id = annotation.get("image_id")
        image = image_entries.get(image_id) if _is_id(image_id) else None
        if image is None:
            raise DatasetError(f"{where} refers to unknown image {image_id!r:.40}")
        if annotation.get("iscrowd", 0):
            crowd += 1
            continue
        segmentation = annotation.get("segmentation")
        if not segmentation:
            raise DatasetError(f"{where} has no segmentation (val needs instance masks)")
        segmentation = _segmentation(segmentation, where)
        height, width = _image_size(image, segmentation, where)
        category_id = _integer(annotation.get("category_id", OBJECT_CATEGORY[0]), f"{where}: 'category_id'")
        per_image[image["id"]].append(
            Instance(
                instance_id=_integer(annotation.get("id", len(per_image[image["id"]]) + 1), f"{where}: 'id'"),
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
        if not isinstance(image, dict) or not _is_file_name(image.get("file_name")):
            raise DatasetError(f"{path}: not an SA-1B image file (needs an 'image' entry with 'file_name')")
        instances = []
        for index, annotation in enumerate(_objects(document, "annotations", path)):
            where = f"{path}: annotation {annotation.get('id', index)!s:.40}"
            rle = annotation.get("segmentation")
            if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
                raise DatasetError(f"{where} has no RLE segmentation")
            rle = _segmentation(rle, where)
            height, width = rle["size"]
            instance_id = _integer(annotation.get("id", index), f"{where}: 'id'")
            instances.append(Instance(instance_id, OBJECT_CATEGORY[0], OBJECT_CATEGORY[1], height, width, rle))
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
    candidates = [root / f"{stem}{suffix}" for suffix in IMAGE_SUFFIXES]
    return next((path for path in candidates if path.is_file()), candidates[0])


def _png_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, Image.DecompressionBombError) as err:
        raise DatasetError(f"cannot read mask {path}: {err}") from err


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    # ValueError covers JSONDecodeError and integers of over 4300 digits; deep nesting is a RecursionError.
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as err:
        raise DatasetError(f"cannot read {path}: {err}") from err


def _objects(document: dict[str, Any], key: str, path: Path) -> list[dict[str, Any]]:
    """`document[key]`: a list of JSON objects, empty when the key is absent."""
    value = document.get(key, [])
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise DatasetError(f"{path}: '{key}' must be a list of objects, got {value!r:.60}")
    return value


def _is_id(value: Any) -> bool:
    """Whether `value` can be an image id: an integer or a string, as JSON writes them."""
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _is_file_name(value: Any) -> bool:
    """Whether `value` can be a file name: a non-empty string."""
    return isinstance(value, str) and bool(value)


def _integer(value: Any, what: str) -> int:
    """`value` as an int: an integer, or a float with an integer value (some tools write 480.0)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise DatasetError(f"{what} must be an integer, got {value!r:.40}")


def _size(height: Any, width: Any, what: str) -> tuple[int, int]:
    """(H, W) of a mask: positive integers, at most `MAX_MASK_PIXELS` together."""
    h, w = _integer(height, f"{what} height"), _integer(width, f"{what} width")
    if h < 1 or w < 1 or h * w > MAX_MASK_PIXELS:
        raise DatasetError(f"{what} size {w}x{h} is out of range (each side >= 1, at most {MAX_MASK_PIXELS} pixels)")
    return h, w


def _segmentation(segmentation: Any, where: str) -> list[list[Any]] | dict[str, Any]:
    """Polygons as they are (their numbers are checked when decoded), or an RLE with its size as ints."""
    if isinstance(segmentation, list):
        if not all(isinstance(polygon, list) for polygon in segmentation):
            raise DatasetError(f"{where}: polygons must be lists [x1, y1, x2, y2, ...], got {segmentation!r:.60}")
        return segmentation
    if not isinstance(segmentation, dict):
        raise DatasetError(f"{where}: segmentation must be polygons or an RLE, got {segmentation!r:.60}")
    size, counts = segmentation.get("size"), segmentation.get("counts")
    if not isinstance(size, list) or len(size) != 2:
        raise DatasetError(f"{where}: RLE 'size' must be [height, width], got {size!r:.60}")
    if not isinstance(counts, (str, list)):
        raise DatasetError(f"{where}: RLE 'counts' must be a string or a list, got {counts!r:.60}")
    return {"size": list(_size(*size, f"{where}: RLE")), "counts": counts}


def _image_size(image: dict[str, Any], segmentation: list[list[Any]] | dict[str, Any], where: str) -> tuple[int, int]:
    """(H, W) of an annotation: its image's height/width, or an RLE's own (checked) size."""
    if "height" in image and "width" in image:
        return _size(image["height"], image["width"], f"{where}: its image's")
    if isinstance(segmentation, dict):
        height, width = segmentation["size"]
        return height, width
    raise DatasetError(f"{where}: image {image['id']!r} needs 'height' and 'width' to draw polygon annotations")


def _decode(segmentation: list[list[Any]] | dict[str, Any] | Path, height: int, width: int) -> np.ndarray:
    if isinstance(segmentation, Path):
        with Image.open(segmentation) as image:
            return np.asarray(image.convert("L")) > 0
    if isinstance(segmentation, list):
        # Polygons: one RLE per part, merged into one mask.
        rles = mask_utils.frPyObjects([_polygon(polygon, height, width) for polygon in segmentation], height, width)
        return mask_utils.decode(mask_utils.merge(rles)).astype(bool)
    if isinstance(segmentation["counts"], list):
        rle = mask_utils.frPyObjects(_uncompressed_rle(segmentation), *segmentation["size"])
        return mask_utils.decode(rle).astype(bool)
    return coco_decode_rle(segmentation)


def _polygon(polygon: list[Any], height: int, width: int) -> list[float]:
    """[x1, y1, x2, y2, ...] as floats, checked for pycocotools.

    pycocotools takes 4 numbers for a box, drops an odd last one, and walks
    every pixel between vertices however far outside the image they lie.
    """
    if len(polygon) < 6 or len(polygon) % 2:
        raise ValueError(f"a polygon needs 3 or more x, y pairs, got {len(polygon)} numbers")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in polygon):
        raise ValueError(f"a polygon must be numbers, got {polygon!r:.60}")
    # Comparisons, not float(): they hold for integers of any size and reject NaN.
    inside_x = all(-width <= x <= 2 * width for x in polygon[0::2])
    inside_y = all(-height <= y <= 2 * height for y in polygon[1::2])
    if not (inside_x and inside_y):
        raise ValueError(f"a polygon has a vertex far outside its {width}x{height} image (or NaN): {polygon!r:.60}")
    return [float(v) for v in polygon]


def _uncompressed_rle(rle: dict[str, Any]) -> dict[str, Any]:
    """An RLE with counts as a list, checked: pycocotools casts them to uint32 unchecked."""
    height, width = rle["size"]
    counts = rle["counts"]
    integers = all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts)
    if not integers or sum(counts) != height * width:
        raise ValueError(f"RLE counts must be integers >= 0 adding up to {height} x {width} pixels, got {counts!r:.60}")
    return rle
