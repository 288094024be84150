"""Images from paths, URLs, PIL images and arrays, as (H, W, 3) uint8 RGB arrays."""

from __future__ import annotations

import hashlib
import io
import os
import urllib.error
import urllib.request
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

ImageSource = Union[str, os.PathLike, np.ndarray, Image.Image]

_URL_SCHEMES = ("http://", "https://", "file://")
_URL_TIMEOUT_S = 30


def load_image(source: ImageSource, image_format: str = "RGB") -> np.ndarray:
    """Read an image as an (H, W, 3) uint8 RGB array.

    Args:
        source: A file path, an http(s) or file URL, a PIL image, or an array
            (see `to_rgb_uint8` for the arrays accepted).
        image_format: Channel order of an array source, "RGB" or "BGR"
            (OpenCV's `cv2.imread` gives BGR). Files and PIL images are always RGB.

    Raises:
        FileNotFoundError: The path does not exist.
        ValueError: The file or URL is not a readable image, or the array is not an image.
        TypeError: `source` is none of the accepted kinds.
    """
    if isinstance(source, np.ndarray):
        return to_rgb_uint8(source, image_format)
    if isinstance(source, Image.Image):
        return _pil_to_rgb(source)
    if isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        if text.startswith(_URL_SCHEMES):
            return _pil_to_rgb(_open_bytes(_fetch(text), text))
        if not os.path.isfile(text):
            raise FileNotFoundError(f"image file not found: {text}")
        with open(text, "rb") as handle:
            data = handle.read()
        return _pil_to_rgb(_open_bytes(data, text))
    raise TypeError(f"expected an image path, URL, PIL image or numpy array, got {type(source).__name__}")


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


def _open_bytes(data: bytes, name: str) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ValueError(f"cannot read image {name}: {err}") from err
    return image


def _pil_to_rgb(image: Image.Image) -> np.ndarray:
    # Phones store rotation in EXIF; OpenCV and browsers apply it, so do we.
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGB", "L", "RGBA", "I;16", "I;16B", "I;16L", "I", "LA"):
        array = np.asarray(image)
        if image.mode == "LA":
            array = array[:, :, 0]
        return to_rgb_uint8(array)
    return np.asarray(image.convert("RGB"))
