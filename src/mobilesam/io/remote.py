"""Images behind URIs (s3://, gs://, hdfs://, file://, ...), listed and read through fsspec.

Ray runs take such sources, since each worker reads its own images wherever
it runs. fsspec picks the filesystem by the URI's scheme; the cloud ones
need their package (s3fs, gcsfs, ...) and the user's credentials, and
fsspec's error names the package when it is missing.
"""

from __future__ import annotations

import glob
import re
from pathlib import PurePosixPath
from typing import Any

import numpy as np

from ..errors import SourceError
from .images import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES, load_image_bytes
from .sources import unique_stems

# Two letters at least, so that a Windows drive ("C://photos") is never a scheme.
_SCHEME = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]+://")


def is_uri(text: str) -> bool:
    """Whether `text` names a file by URI ("s3://bucket/key.jpg") rather than by a local path."""
    return _SCHEME.match(text) is not None


def find_uri_images(source: str) -> list[tuple[str, str]]:
    """The images at URI `source` as (URI, stem), sorted: one file, or a folder searched recursively.

    As `mobilesam.io.sources.find_jobs` does for a local folder, hidden entries
    are skipped and a stem is the image's path relative to the folder.

    Raises:
        FileNotFoundError: Nothing at `source`.
        SourceError: A folder without images, or a glob (give the folder instead).
        ImportError: fsspec, or the filesystem package of the scheme, is not installed.
    """
    fs, root = _filesystem(source)
    if glob.has_magic(root):
        raise SourceError(f"{source}: globs are for local paths; give the folder of the images")
    if fs.isfile(root):
        return [(source, PurePosixPath(root).stem)]
    if not fs.isdir(root):
        raise FileNotFoundError(f"no such file or folder: {source}")
    relatives = sorted(
        relative
        for relative in (PurePosixPath(path).relative_to(root) for path in fs.find(root))
        if relative.suffix.lower() in IMAGE_SUFFIXES and not any(part.startswith(".") for part in relative.parts)
    )
    if not relatives:
        raise SourceError(f"no images in {source} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    uris = [fs.unstrip_protocol(str(PurePosixPath(root, relative))) for relative in relatives]
    return list(zip(uris, unique_stems(relatives)))


def load_uri_image(uri: str, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read the image at `uri` as an (H, W, 3) uint8 RGB array, as `load_image` reads a file.

    Raises:
        FileNotFoundError: Nothing at `uri`.
        ImageTooLarge: More than `max_pixels` pixels.
        ValueError: Not a readable image.
        ImportError: fsspec, or the filesystem package of the scheme, is not installed.
    """
    fs, path = _filesystem(uri)
    return load_image_bytes(fs.cat_file(path), uri, max_pixels=max_pixels)


def _filesystem(uri: str) -> tuple[Any, str]:
    """The fsspec filesystem of `uri` and the path on it."""
    try:
        import fsspec
    except ImportError as err:
        raise ImportError("images behind URIs are read with fsspec: pip install 'mobilesam[ray]'") from err
    return fsspec.core.url_to_fs(uri)
