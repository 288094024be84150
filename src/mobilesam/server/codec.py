"""The service's wire format: upload bodies and segment requests in, `Results` and generator records out."""

from __future__ import annotations

import base64
import binascii
import io
from typing import Any

import numpy as np
from PIL import Image

from ..errors import ImageTooLarge
from ..io.images import DECODE_ERRORS, load_image, open_image_file
from ..masks import encode_masks
from ..prompts import Prompt, check_prompt
from ..results import Results
from .errors import PayloadTooLarge, UnsupportedMedia
from .schemas import EverythingMask, SegmentMask, SegmentRequest

# Decoders a client may reach; Pillow's rarer formats stay out of an upload's way.
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF")


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """An uploaded file as (H, W, 3) uint8 RGB, its size checked before the pixels are decoded.

    Raises:
        UnsupportedMedia: It is not a readable image.
        PayloadTooLarge: It has more than `max_pixels` pixels.
    """
    try:
        image = open_image_file(data, "upload", max_pixels, IMAGE_FORMATS)
    except ImageTooLarge as err:
        raise PayloadTooLarge(
            f"the image has {err.width}x{err.height} = {err.pixels:,} pixels; the limit is {max_pixels:,}"
        ) from err
    except Image.DecompressionBombError as err:
        raise PayloadTooLarge(f"the image has too many pixels: {err}") from err
    except DECODE_ERRORS as err:
        raise UnsupportedMedia(f"not a readable image ({', '.join(IMAGE_FORMATS)}): {err}") from err
    return load_image(image)


def request_prompt(request: SegmentRequest, image_hw: tuple[int, int], mask_input_size: tuple[int, int]) -> Prompt:
    """A segment request's prompt, checked once: the library's `check_prompt`, plus the service's own rules.

    Args:
        request: The prompts, in pixels of the original image.
        image_hw: (H, W) of the image they are for.
        mask_input_size: (h, w) of the model's low-res mask input.

    Raises:
        ValueError: What is wrong with which part of the prompt.
    """
    if request.points is None and request.labels is not None:
        raise ValueError("labels were given without points")
    if request.points is None and request.box is None and request.mask_input is None:
        raise ValueError("give at least one prompt: points (with labels), a box, or mask_input")
    # Clicks without labels are all foreground, as on the page.
    labels = request.labels if request.labels is not None or request.points is None else [1] * len(request.points)
    mask_input = None if request.mask_input is None else _decode_logits(request.mask_input, mask_input_size)
    return check_prompt(image_hw, mask_input_size, request.points, labels, request.box, mask_input)


def segment_masks(results: Results, request: SegmentRequest) -> list[SegmentMask]:
    """One object's `Results` as the response's masks, best first, in the format the request asked for."""
    scores = results.scores
    order = np.argsort(-scores, kind="stable")
    masks = np.asarray(results.masks)[order]  # (C, H, W) bool, best first
    logits = results.low_res_logits
    return [
        SegmentMask(
            score=encoded.score,
            area=encoded.area,
            bbox=[float(v) for v in encoded.bbox],
            segmentation=encoded.rle if request.format == "coco_rle" else None,
            png=_png_base64(mask) if request.format == "png" else None,
            low_res_logits=_float32_base64(logits[index]) if request.return_logits and logits is not None else None,
        )
        for encoded, mask, index in zip(encode_masks(masks, scores[order]), masks, order.tolist())
    ]


def everything_masks(records: list[dict[str, Any]]) -> list[EverythingMask]:
    """The automatic mask generator's records (in coco_rle output mode) as the response's masks."""
    return [
        EverythingMask(
            segmentation=record["segmentation"],
            area=record["area"],
            bbox=record["bbox"],
            predicted_iou=record["predicted_iou"],
            stability_score=record["stability_score"],
            point_coords=record["point_coords"],
            crop_box=record["crop_box"],
        )
        for record in records
    ]


def _decode_logits(value: str | list[list[float]], size: tuple[int, int]) -> Any:
    """`mask_input` as sent: nested lists pass through to `check_prompt`; base64 becomes (h, w) float32."""
    if not isinstance(value, str):
        return value
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as err:
        raise ValueError(f"mask_input is not valid base64: {err}") from err
    if len(raw) != 4 * size[0] * size[1]:
        raise ValueError(
            f"mask_input must be {size[0]}x{size[1]} float32 values ({4 * size[0] * size[1]} bytes), got {len(raw)} bytes"
        )
    return np.frombuffer(raw, dtype="<f4").reshape(size)


def _float32_base64(values: np.ndarray) -> str:
    return base64.b64encode(values.astype("<f4").tobytes()).decode()


def _png_base64(mask: np.ndarray) -> str:
    """An (H, W) bool mask as base64 of a grayscale PNG, 255 inside."""
    buffer = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()
