"""Prompts files: each image of a run with its own objects, as JSON or CSV.

JSON, a list of entries (or a mapping from image to entry)::

    [{"image": "dog.jpg", "points": [[x, y], ...], "labels": [1, 0], "box": [x1, y1, x2, y2]},
     {"image": "cat.png", "objects": [{"box": [...]}, {"points": [[x, y]]}]}]

An entry without "objects" is one object. CSV with a header row holding
`image` and any of `object, x, y, label, x1, y1, x2, y2`: each row adds a
point (x, y, label, default 1) and/or the box (x1..y2) to object `object`
(default 0) of `image`. Image paths are relative to the prompts file.
Each object is checked into a `mobilesam.prompts.Prompt` as the file is read.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SourceError
from ..prompts import Prompt, make_prompt

PROMPT_FILE_SUFFIXES = frozenset({".json", ".csv"})
_CSV_COLUMNS = ("image", "object", "x", "y", "label", "x1", "y1", "x2", "y2")


def read_prompt_objects(path: str | os.PathLike[str]) -> dict[Path, list[Prompt]]:
    """Read a JSON or CSV prompts file (format in the module docstring): each image's objects, in file order.

    Entries for the same image are merged. Each object is checked here
    (`mobilesam.prompts.make_prompt`); whether it fits its image is checked
    when the image is read.

    Args:
        path: The `.json` or `.csv` file; any other suffix is read as JSON.

    Returns:
        Image path (relative ones joined to the file's folder) -> its checked prompts, one per object.

    Raises:
        SourceError: Malformed file or prompt, with the entry or rows at fault.
        FileNotFoundError: The file does not exist.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise SourceError(f"{path}: not a UTF-8 text file") from err
    if path.suffix.lower() == ".csv":
        entries = _csv_entries(text, path)
    else:
        entries = _json_entries(text, path)
    objects_by_image: dict[Path, list[Prompt]] = {}
    for image, objects in entries:
        # ".", "/" and "a/.." name folders, and would give outputs no name.
        if Path(image).name in ("", ".."):
            raise SourceError(f"{path}: image {image!r} names a folder, not an image file")
        image_path = Path(image) if Path(image).is_absolute() else path.parent / image
        objects_by_image.setdefault(image_path, []).extend(objects)
    if not objects_by_image:
        raise SourceError(f"{path}: no images listed")
    return objects_by_image


def _json_entries(text: str, path: Path) -> Iterable[tuple[str, list[Prompt]]]:
    try:
        document = json.loads(text)
    # Besides JSONDecodeError: integers of over 4300 digits are a ValueError, deep nesting a RecursionError.
    except (ValueError, RecursionError) as err:
        raise SourceError(f"{path}: not valid JSON: {err}") from err
    if isinstance(document, dict):
        document = [{"image": image, **_require_dict(entry, f"{path}: entry {image!r}")} for image, entry in document.items()]
    if not isinstance(document, list):
        raise SourceError(f"{path}: expected a list of entries or a mapping from image to entry")
    entries = []
    for index, entry in enumerate(document):
        where = f"{path}: entry {index}"
        entry = _require_dict(entry, where)
        image = entry.get("image")
        if not isinstance(image, str) or not image:
            raise SourceError(f'{where}: needs "image", a path relative to the prompts file')
        if "objects" in entry:
            unknown = set(entry) - {"image", "objects"}
            if unknown:
                raise SourceError(f'{where}: with "objects", prompts go inside each object, not {sorted(unknown)}')
            raw_objects = entry["objects"]
            if not isinstance(raw_objects, list) or not raw_objects:
                raise SourceError(f'{where}: "objects" must be a non-empty list')
            objects = [
                _json_object(_require_dict(o, f"{where}, object {i}"), f"{where}, object {i}") for i, o in enumerate(raw_objects)
            ]
        else:
            objects = [_json_object({k: v for k, v in entry.items() if k != "image"}, where)]
        entries.append((image, objects))
    return entries


def _require_dict(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise SourceError(f'{where}: expected an object with "points", "labels" and/or "box", got {value!r:.60}')
    return value


def _json_object(entry: dict, where: str) -> Prompt:
    unknown = set(entry) - {"points", "labels", "box"}
    if unknown:
        raise SourceError(f"{where}: unknown keys {sorted(unknown)} (expected points, labels, box)")
    points = labels = box = None
    if entry.get("points") is not None:
        points = _numbers(entry["points"], where, "points")
        if points.ndim == 1:
            points = points[None]
        if points.ndim != 2 or points.shape[1] != 2 or len(points) == 0:
            raise SourceError(f'{where}: "points" must be [[x, y], ...], got {entry["points"]!r:.60}')
        labels = np.ones(len(points), dtype=np.int64)
        if entry.get("labels") is not None:
            labels = _numbers(entry["labels"], where, "labels").reshape(-1)
            if len(labels) != len(points):
                raise SourceError(f"{where}: {len(labels)} labels for {len(points)} points")
    elif entry.get("labels") is not None:
        raise SourceError(f'{where}: "labels" without "points"')
    if entry.get("box") is not None:
        box = _numbers(entry["box"], where, "box")
        if box.shape != (4,):
            raise SourceError(f'{where}: "box" must be [x1, y1, x2, y2], got {entry["box"]!r:.60}')
    if points is None and box is None:
        raise SourceError(f'{where}: an object needs "points" or "box"')
    return _prompt(points, labels, box, where)


def _prompt(points: Any, labels: Any, box: Any, where: str) -> Prompt:
    """The one check of a prompt (label values, box corners, finite numbers), its error naming `where`."""
    try:
        return make_prompt(points, labels, box)
    except ValueError as err:
        raise SourceError(f"{where}: {err}") from err


def _numbers(value: Any, where: str, name: str) -> np.ndarray:
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError) as err:
        raise SourceError(f'{where}: "{name}" must hold numbers, got {value!r:.60}') from err


def _csv_entries(text: str, path: Path) -> Iterable[tuple[str, list[Prompt]]]:
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for line, values in _csv_rows(text, path):
        where = f"{path}: line {line}"
        image = values.get("image", "")
        if not image:
            raise SourceError(f"{where}: no image")
        obj = rows.setdefault((image, values.get("object") or "0"), {"points": [], "labels": [], "box": None, "lines": []})
        obj["lines"].append(line)
        point = [values.get(k, "") for k in ("x", "y")]
        box = [values.get(k, "") for k in ("x1", "y1", "x2", "y2")]
        if any(point):
            obj["points"].append(_csv_numbers(point, where, "x, y"))
            obj["labels"].append(_csv_numbers([values.get("label") or "1"], where, "label")[0])
        if any(box):
            if obj["box"] is not None:
                raise SourceError(f"{where}: a second box for object {values.get('object') or '0'} of {image}")
            obj["box"] = _csv_numbers(box, where, "x1, y1, x2, y2")
        if not any(point) and not any(box):
            raise SourceError(f"{where}: neither a point (x, y) nor a box (x1, y1, x2, y2)")
    entries = []
    for (image, name), obj in rows.items():
        lines = obj["lines"]
        at = f"line {lines[0]}" if len(lines) == 1 else f"lines {', '.join(map(str, lines))}"
        prompt = _prompt(obj["points"] or None, obj["labels"] or None, obj["box"], f"{path}: {at}, object {name} of {image}")
        entries.append((image, [prompt]))
    return entries


def _csv_rows(text: str, path: Path) -> list[tuple[int, dict[str, str]]]:
    """The rows of a CSV prompts file under a checked header: (line number, stripped cells by column)."""
    reader = csv.DictReader(text.splitlines())
    try:
        header = [name.strip() for name in reader.fieldnames or []]
        if "image" not in header or set(header) - set(_CSV_COLUMNS):
            raise SourceError(f'{path}: the header must hold "image" and any of {", ".join(_CSV_COLUMNS[1:])}; got {header}')
        reader.fieldnames = header
        # Cells beyond the header land under the key None; they are ignored.
        return [(reader.line_num, {k: (v or "").strip() for k, v in row.items() if k is not None}) for row in reader]
    except csv.Error as err:
        raise SourceError(f"{path}: line {reader.line_num}: not readable as CSV: {err}") from err


def _csv_numbers(cells: list[str], where: str, names: str) -> list[float]:
    try:
        return [float(cell) for cell in cells]
    except ValueError as err:
        raise SourceError(f"{where}: {names} must all be numbers, got {cells}") from err
