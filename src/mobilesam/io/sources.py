"""What a run works on: image files from a path, folder or glob, or from a prompts file.

Each image becomes an `ImageJob` with a `stem` (its path relative to the
source root, without suffix, "/"-separated) that names its outputs, so
`photos/a/dog.jpg` and `photos/b/dog.jpg` never overwrite each other.
A prompts file (`mobilesam.io.prompt_files`) gives each image its own objects.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath

from ..errors import SourceError
from ..prompts import Prompt
from .images import IMAGE_SUFFIXES
from .prompt_files import PROMPT_FILE_SUFFIXES, read_prompt_objects


@dataclass(frozen=True)
class ImageJob:
    """One image to segment.

    Attributes:
        path: The image file.
        stem: Output name: path relative to the source root, no suffix, "/"-separated.
        objects: One checked prompt per object, from a prompts file; or None to use the command's own.
    """

    path: Path
    stem: str
    objects: tuple[Prompt, ...] | None = None


def find_jobs(source: str | os.PathLike[str], exclude: str | os.PathLike[str] | None = None) -> list[ImageJob]:
    """Expand SOURCE into image jobs, sorted by path.

    Args:
        source: An image file, a folder (searched recursively, hidden entries
            skipped), a glob pattern ("photos/*.jpg", "**" recurses), or a
            `.json` / `.csv` prompts file.
        exclude: A folder whose files are never taken (the output folder, which
            may lie inside a source folder).

    Raises:
        SourceError: Nothing matches, or the prompts file is malformed.
        FileNotFoundError: A file or folder that does not exist.
    """
    text = os.fspath(source)
    path = Path(text)
    if path.is_file() and path.suffix.lower() in PROMPT_FILE_SUFFIXES:
        return read_prompts_file(path)
    if path.is_file():
        return [ImageJob(path, path.stem)]
    if path.is_dir():
        root, paths = path, _images_under(path)
    elif glob.has_magic(text):
        root = _glob_root(text)
        paths = sorted(Path(match) for match in glob.glob(text, recursive=True) if Path(match).suffix.lower() in IMAGE_SUFFIXES)
    else:
        raise FileNotFoundError(f"no such file or folder: {text}")
    if exclude is not None:
        excluded = Path(exclude).resolve()
        paths = [p for p in paths if not p.resolve().is_relative_to(excluded)]
    if not paths:
        raise SourceError(f"no images in {text} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    return [ImageJob(p, stem) for p, stem in zip(paths, _stems(paths, root))]


def _images_under(folder: Path) -> list[Path]:
    found = []
    for directory, subdirs, files in os.walk(folder):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        found.extend(
            Path(directory, name) for name in files if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES
        )
    return sorted(found)


def _glob_root(pattern: str) -> Path:
    """The folder above the first part of `pattern` with a wildcard."""
    parts = Path(pattern).parts
    first_magic = next(i for i, part in enumerate(parts) if glob.has_magic(part))
    return Path(*parts[:first_magic]) if first_magic else Path(".")


def _stems(paths: list[Path], root: Path) -> list[str]:
    """Output names of `paths` relative to `root` (`unique_stems`); a path outside `root` is named by its file name."""
    relatives = []
    for path in paths:
        try:
            relatives.append(path.resolve().relative_to(root.resolve()))
        except ValueError:
            relatives.append(Path(path.name))
    return unique_stems(relatives)


def unique_stems(relatives: Sequence[PurePath]) -> list[str]:
    """Output names of images from their paths relative to the source root: "/"-separated, without suffix.

    Where two differ only by suffix ("a.jpg", "a.png"), the suffix joins the name ("a_jpg", "a_png").
    """
    stems = [relative.with_suffix("").as_posix() for relative in relatives]
    counts: dict[str, int] = {}
    for stem in stems:
        counts[stem] = counts.get(stem, 0) + 1
    return [
        f"{stem}_{relative.suffix.lstrip('.').lower()}" if counts[stem] > 1 else stem for stem, relative in zip(stems, relatives)
    ]


def read_prompts_file(path: str | os.PathLike[str]) -> list[ImageJob]:
    """Read a JSON or CSV prompts file (`mobilesam.io.prompt_files`) into jobs, one per image, in file order.

    Raises:
        SourceError: Malformed file or prompt, with the entry or rows at fault.
        FileNotFoundError: The file does not exist.
    """
    path = Path(path)
    objects_by_image = read_prompt_objects(path)
    paths = list(objects_by_image)
    return [ImageJob(p, stem, tuple(objects_by_image[p])) for p, stem in zip(paths, _stems(paths, path.parent))]
