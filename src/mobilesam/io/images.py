"""Images from paths, URLs, file bytes, PIL images and arrays, as (H, W, 3) uint8 RGB arrays.

An image file's width x height is checked against one limit (`DEFAULT_MAX_PIXELS`
unless raised) from its header, before any pixel is decoded: `open_image_file`.
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
import urllib.error
import urllib.request
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from ..errors import ImageTooLarge

ImageSource = str | os.PathLike | np.ndarray | Image.Image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm")
"""The file suffixes taken for images, lower case; in the order a dataset's `<stem>.<ext>` is looked for."""

DEFAULT_MAX_PIXELS = 40_000_000
"""Largest width x height read from a file by default: a 40-megapixel photo passes, a decompression bomb does not."""

DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError)
"""What Pillow raises for bytes that are not a readable image (its own size check included, see `open_image_file`)."""

_URL_SCHEMES = ("http://", "https://", "file://")
_URL_TIMEOUT_S = 30


def load_image(source: ImageSource, image_format: str = "RGB", *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image as an (H, W, 3) uint8 RGB array.

    Args:
        source: A file path, an http(s) or file URL, a PIL image, or an array
            (see `to_rgb_uint8` for the arrays accepted).
        image_format: Channel order of an array source, "RGB" or "BGR"
            (OpenCV's `cv2.imread` gives BGR). Files and PIL images are always RGB.
        max_pixels: Largest width x height of a file or URL, checked from its header before
            any pixel is decoded. Arrays and PIL images are the caller's own and are not checked.

    Raises:
        FileNotFoundError: The path does not exist.
        ImageTooLarge: The file or URL has more than `max_pixels` pixels.
        ValueError: The file or URL is not a readable image, the array is not an image, or `max_pixels` < 1.
        TypeError: `source` is none of the accepted kinds.
    """
    _check_limit(max_pixels)
    if isinstance(source, np.ndarray):
        return to_rgb_uint8(source, image_format)
    if isinstance(source, Image.Image):
        return _pil_to_rgb(source)
    if isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        if text.startswith(_URL_SCHEMES):
            return load_image_bytes(_fetch(text), text, max_pixels=max_pixels)
        if not os.path.isfile(text):
            raise FileNotFoundError(f"image file not found: {text}")
        with open(text, "rb") as handle:
            data = handle.read()
        return load_image_bytes(data, text, max_pixels=max_pixels)
    raise TypeError(f"expected an image path, URL, PIL image or numpy array, got {type(source).__name__}")


def load_image_bytes(data: bytes, name: str, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image file's bytes as an (H, W, 3) uint8 RGB array, its size checked first (see `open_image_file`).

    Args:
        data: The file's bytes, from wherever they were read.
        name: The file as the user knows it (path, URL), for errors.
        max_pixels: Largest width x height decoded.

    Raises:
        ImageTooLarge: The header gives more than `max_pixels` pixels.
        ValueError: Not a readable image, or `max_pixels` < 1.
    """
    _check_limit(max_pixels)
    try:
        image = open_image_file(data, name, max_pixels)
    except ImageTooLarge:
        raise  # already names the file and the fix
    except DECODE_ERRORS as err:
        raise ValueError(f"cannot read image {name}: {err}") from err
    return _pil_to_rgb(image)


def open_image_file(data: bytes, name: str, max_pixels: int, formats: Sequence[str] | None = None) -> Image.Image:
    """Decode an image file, its width x height checked against `max_pixels` before any pixel is decoded.

    `Image.open` would apply Pillow's own process-wide limit (`Image.MAX_IMAGE_PIXELS`:
    a `DecompressionBombWarning` above it, an error at twice it) before the size could
    be checked here, so the header is parsed by the format's reader directly and
    `max_pixels` alone decides. Pillow's limit is left as it is for other code; a few
    decoders (TIFF, GIF and MPO frames) check it again while loading, which matters only
    for a `max_pixels` above it.

    Args:
        data: The file's bytes.
        name: The file as the user knows it (path, URL, "upload"), for errors.
        max_pixels: Largest width x height decoded.
        formats: Pillow format names to accept ("PNG", "JPEG", ...); default all that Pillow reads.

    Raises:
        ImageTooLarge: The header gives more than `max_pixels` pixels.
        UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError:
            Not a readable image (`DECODE_ERRORS`).
    """
    image = _open_header(data, formats)
    if image.width * image.height > max_pixels:
        raise ImageTooLarge(name, image.size, max_pixels)
    image.load()
    return image


def to_rgb_uint8(image: np.ndarray, image_format: str = "RGB") -> np.ndarray:
    """Normalise an image array to (H, W, 3) uint8 RGB.

    Grayscale (H, W) or (H, W, 1) is repeated to three channels and an alpha
    channel is dropped. uint8 is taken as is; 16-bit integers are scaled by
    1/257; other integers must lie in [0, 255]; floats in [0, 1] are scaled
    by 255 and floats up to 255 are taken as is; bool becomes 0/255.

    Raises:
        ValueError: Wrong shape, empty, NaN/inf or out-of-range values, or unknown `image_format`.
        TypeError: Not a numeric array.
    """
    if image_format not in ("RGB", "BGR"):
        raise ValueError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
    if not isinstance(image, np.ndarray):
        raise TypeError(f"expected a numpy array, got {type(image).__name__}")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected an (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) image, got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image is empty: shape {image.shape}")
    image = _to_uint8(image)
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    elif image.shape[2] == 4:
        image = image[:, :, :3]
    if image_format == "BGR":
        image = image[:, :, ::-1]
    return np.ascontiguousarray(image)


def pixels_digest(rgb: np.ndarray) -> str:
    """Hex SHA-256 of an (H, W, 3) uint8 image's size and pixels: its identity for caches, whatever file it came from."""
    digest = hashlib.sha256(f"{rgb.shape[0]}x{rgb.shape[1]}:".encode())
    digest.update(np.ascontiguousarray(rgb).data)
    return digest.hexdigest()


def _to_uint8(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.bool_:
        return image.astype(np.uint8) * 255
    if np.issubdtype(image.dtype, np.integer):
        low, high = int(image.min()), int(image.max())
        if low < 0 or high > 65535:
            raise ValueError(f"integer image values must lie in [0, 255] or [0, 65535], got [{low}, {high}]")
        if image.dtype == np.uint16 or high > 255:
            return np.round(image / 257.0).astype(np.uint8)
        return image.astype(np.uint8)
    if np.issubdtype(image.dtype, np.floating):
        if not np.isfinite(image).all():
            raise ValueError("image contains NaN or infinite values")
        low, high = float(image.min()), float(image.max())
        if low < 0 or high > 255:
            raise ValueError(f"float image values must lie in [0, 1] or [0, 255], got [{low:g}, {high:g}]")
        scale = 255.0 if high <= 1.0 else 1.0
        return np.round(image * scale).astype(np.uint8)
    raise TypeError(f"unsupported image dtype {image.dtype}")


def _fetch(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=_URL_TIMEOUT_S) as response:
            return response.read()
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise ValueError(f"cannot fetch image from {url}: {err}") from err


def _check_limit(max_pixels: int) -> None:
    # Before any decoding, where a ValueError would pass for an unreadable file.
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be at least 1, got {max_pixels}")


def _open_header(data: bytes, formats: Sequence[str] | None) -> ImageFile.ImageFile:
    """The image in `data` with only its header parsed: `Image.open`'s format search without its size check."""
    Image.init()
    prefix = data[:16]
    unsupported = []
    for format_name in formats or Image.ID:
        factory, accept = Image.OPEN[format_name.upper()]
        try:
            verdict = accept is None or accept(prefix)
        except struct.error:  # a prefix shorter than the format's magic (a file of a few bytes)
            continue
        if isinstance(verdict, str):  # recognised, but this Pillow lacks the codec
            unsupported.append(verdict)
        elif verdict:
            try:
                return factory(io.BytesIO(data), "")
            except (SyntaxError, IndexError, TypeError, struct.error):
                continue  # as Image.open does: another format may still claim these bytes
    raise UnidentifiedImageError("; ".join(["cannot identify image file", *unsupported]))


def _pil_to_rgb(image: Image.Image) -> np.ndarray:
    # Phones store rotation in EXIF; OpenCV and browsers apply it, so do we.
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGB", "L", "RGBA", "I;16", "I;16B", "I;16L", "I", "LA"):
        array = np.asarray(image)
        if image.mode == "LA":
            array = array[:, :, 0]
        return to_rgb_uint8(array)
    return np.asarray(image.convert("RGB"))
