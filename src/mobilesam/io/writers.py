"""The output formats of `mobilesam predict/everything`: where each goes in the output folder, and how it is written.

An image's "stem" is its path relative to the source root without suffix,
with "/" separators ("sub/dog"). Every output is written atomically, so an
image whose output paths all exist is done.

Layout inside the output folder:
    masks/<stem>/000.png ...   png
    overlays/<stem>.jpg        overlay
    coco/<stem>.json           coco (merged into coco.json by `merge_coco_outputs`)
    labels/<stem>.txt          yolo
    labelme/<stem>.json        labelme
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from .coco import merge_coco, write_coco
from .labelme import write_labelme
from .mask_png import write_mask_pngs
from .overlay import write_overlay
from .yolo import write_yolo_seg

if TYPE_CHECKING:
    from ..results import Results


@dataclass(frozen=True)
class OutputFormat:
    """One output format.

    Attributes:
        name: Name used on the command line.
        help: One-line description for the CLI's help.
        relative_path: stem -> output path relative to the output folder, "/"-separated.
        write: (result, output path, stem) -> None; writes atomically.
        finalise: (output folder, every stem of the run) -> None, run once at the end of a
            run that did not fail, for a format that gathers its images in one file; or None.
    """

    name: str
    help: str
    relative_path: Callable[[str], str]
    write: Callable[[Results, Path, str], None]
    finalise: Callable[[Path, Sequence[str]], object] | None = None


def image_file_name(result: Results, stem: str) -> str:
    """The image's path relative to the source root: `stem` plus the suffix of `result.path`, if any.

    Used as COCO "file_name" and as LabelMe's fallback "imagePath".
    """
    suffix = PurePosixPath(result.path).suffix if result.path is not None else ""
    return stem + suffix


def _write_png(result: Results, path: Path, stem: str) -> None:
    write_mask_pngs(result, path)


def _write_overlay(result: Results, path: Path, stem: str) -> None:
    write_overlay(result, path)


def _write_coco(result: Results, path: Path, stem: str) -> None:
    write_coco(result, path, image_file_name(result, stem))


def _write_yolo(result: Results, path: Path, stem: str) -> None:
    write_yolo_seg(result, path)


def _write_labelme(result: Results, path: Path, stem: str) -> None:
    write_labelme(result, path, image_path=image_file_name(result, stem))


_FORMATS = (
    OutputFormat("png", "one 0/255 PNG per mask, masks/<stem>/NNN.png", lambda stem: f"masks/{stem}", _write_png),
    OutputFormat(
        "overlay",
        "masks and prompts over the image, overlays/<stem>.jpg",
        lambda stem: f"overlays/{stem}.jpg",
        _write_overlay,
    ),
    OutputFormat(
        "coco",
        "COCO RLE annotations, coco/<stem>.json, merged into coco.json",
        lambda stem: f"coco/{stem}.json",
        _write_coco,
        lambda out_dir, stems: merge_coco_outputs(out_dir, stems),
    ),
    OutputFormat("yolo", "YOLO-seg polygons, labels/<stem>.txt", lambda stem: f"labels/{stem}.txt", _write_yolo),
    OutputFormat("labelme", "LabelMe polygons, labelme/<stem>.json", lambda stem: f"labelme/{stem}.json", _write_labelme),
)
OUTPUT_FORMATS: dict[str, OutputFormat] = {fmt.name: fmt for fmt in _FORMATS}


def _check(stem: str, formats: Iterable[str]) -> list[OutputFormat]:
    parts = PurePosixPath(stem).parts
    if not parts or stem.startswith("/") or ".." in parts:
        raise ValueError(f"stem must be a relative '/'-separated path without '..', got {stem!r}")
    unknown = [name for name in formats if name not in OUTPUT_FORMATS]
    if unknown:
        raise ValueError(f"unknown output format(s) {unknown}; expected some of {list(OUTPUT_FORMATS)}")
    return [OUTPUT_FORMATS[name] for name in formats]


def output_paths(out_dir: str | os.PathLike[str], stem: str, formats: Iterable[str]) -> list[Path]:
    """Where the given formats put the outputs of the image `stem`, in the order of `formats`.

    Args:
        out_dir: The output folder.
        stem: The image's path relative to the source root, without suffix, "/"-separated.
        formats: Names from `OUTPUT_FORMATS`.

    Returns:
        One path per format.

    Raises:
        ValueError: An unknown format, or a stem that is absolute or climbs out with "..".
    """
    formats = list(formats)
    return [Path(out_dir, fmt.relative_path(stem)) for fmt in _check(stem, formats)]


def write_outputs(result: Results, out_dir: str | os.PathLike[str], stem: str, formats: Iterable[str]) -> list[Path]:
    """Write the outputs of one image in the given formats, each atomically.

    Args:
        result: Masks of the image.
        out_dir: The output folder.
        stem: The image's path relative to the source root, without suffix, "/"-separated.
        formats: Names from `OUTPUT_FORMATS`.

    Returns:
        The paths written, as `output_paths` gives them.

    Raises:
        ValueError: An unknown format or a bad stem (checked before anything is written).
    """
    formats = list(formats)
    paths = output_paths(out_dir, stem, formats)
    for name, path in zip(formats, paths):
        OUTPUT_FORMATS[name].write(result, path, stem)
    return paths


def merge_coco_outputs(out_dir: str | os.PathLike[str], stems: Iterable[str]) -> Path:
    """Merge the per-image COCO files of `stems` that exist into `out_dir/coco.json`, in the order of `stems`.

    Args:
        out_dir: The output folder.
        stems: Images to include; those without a COCO file (failed or skipped) are left out.

    Returns:
        The path of the merged file.
    """
    paths = [path for stem in stems for path in output_paths(out_dir, stem, ["coco"]) if path.is_file()]
    return merge_coco(paths, Path(out_dir, "coco.json"))


def finalise_outputs(out_dir: str | os.PathLike[str], stems: Sequence[str], formats: Iterable[str]) -> None:
    """Run the finalise step of each of `formats` that has one, over every image of the run (`stems`)."""
    for name in formats:
        finalise = OUTPUT_FORMATS[name].finalise
        if finalise is not None:
            finalise(Path(out_dir), stems)
