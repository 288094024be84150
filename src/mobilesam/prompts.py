"""The one prompt type, `Prompt`, checked once at the public entry points.

Every entry point (predictor, API, CLI, prompts files, server) turns what it
was given into `Prompt`s with `make_prompt`, which checks everything that
does not depend on the image and raises `ValueError` saying what was
received and expected. Where the image is known, `check_in_image` checks
the one thing that does: no coordinate far outside it. `check_prompt` does
both, for callers that hold the image; `to_model_frame` then maps a prompt
for both predictors (`SamPredictor`, `OnnxPredictor`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .transforms import ResizeLongestSide

# How far outside the image a coordinate may lie, as a fraction of the image
# side, before it is taken for a mistake (wrong frame, swapped axes).
OUTSIDE_TOLERANCE = 1.0


@dataclass(frozen=True)
class Prompt:
    """One object's prompt, in the original image frame: made by `make_prompt` (or `check_prompt`), nowhere else.

    Attributes:
        point_coords: (N, 2) float64 XY pixels of the original image, or None.
        point_labels: (N,) int64, 1 foreground / 0 background (None exactly when there are no points).
        box: (4,) float64 XYXY pixels of the original image, x1 <= x2 and y1 <= y2, or None.
        mask_input: (1, h, w) float32 low-res logits from an earlier prediction, or None.
    """

    point_coords: np.ndarray | None = None
    point_labels: np.ndarray | None = None
    box: np.ndarray | None = None
    mask_input: np.ndarray | None = None

    @property
    def layout(self) -> tuple[int | None, bool, bool]:
        """(number of points or None, has a box, has a mask): what objects decoded in one batch share."""
        points = None if self.point_coords is None else len(self.point_coords)
        return points, self.box is not None, self.mask_input is not None


def make_prompt(
    point_coords: Any = None,
    point_labels: Any = None,
    box: Any = None,
    mask_input: Any = None,
    mask_input_size: tuple[int, int] = (256, 256),
) -> Prompt:
    """Check one object's prompt on its own: everything but whether it fits its image (`check_in_image`).

    Args:
        point_coords: (N, 2) XY pixels of the original image.
        point_labels: (N,) 1 foreground / 0 background; needed with points.
        box: (4,) or (1, 4) XYXY pixels of the original image.
        mask_input: (1, h, w) or (h, w) low-res logits from an earlier prediction.
        mask_input_size: (h, w) of the model's low-res masks.

    Raises:
        ValueError: What is wrong with which part, and what was expected.
    """
    coords = labels = checked_box = mask = None
    if point_coords is not None:
        coords = _as_points(point_coords)
        if point_labels is None:
            raise ValueError("point_labels must be given with point_coords (1 = foreground, 0 = background)")
        labels = _as_labels(point_labels, coords.shape[0])
    elif point_labels is not None:
        raise ValueError("point_labels were given without point_coords")
    if box is not None:
        boxes = _as_boxes(box)
        if boxes.shape[0] != 1:
            raise ValueError(f"predict takes one box; for {boxes.shape[0]} boxes use SamPredictor.predict_torch")
        checked_box = boxes[0]
        if checked_box[2] < checked_box[0] or checked_box[3] < checked_box[1]:
            raise ValueError(f"box corners must satisfy x1 <= x2 and y1 <= y2, got {checked_box.tolist()}")
    if mask_input is not None:
        mask = _as_mask_input(mask_input, mask_input_size)
    return Prompt(coords, labels, checked_box, mask)


def check_in_image(prompt: Prompt, image_hw: tuple[int, int]) -> None:
    """Check that `prompt` fits its (H, W) image: the one check that needs the image.

    Raises:
        ValueError: A point or box corner lies far outside the image (see `OUTSIDE_TOLERANCE`).
    """
    if prompt.point_coords is not None:
        _check_inside(prompt.point_coords, image_hw, "point")
    if prompt.box is not None:
        _check_inside(prompt.box.reshape(2, 2), image_hw, "box corner")


def check_prompt(
    image_hw: tuple[int, int],
    mask_input_size: tuple[int, int],
    point_coords: Any = None,
    point_labels: Any = None,
    box: Any = None,
    mask_input: Any = None,
) -> Prompt:
    """`make_prompt` and `check_in_image` at once, for `SamPredictor.predict`'s arguments and its image.

    Raises:
        ValueError: What is wrong with which part, and what was expected.
    """
    prompt = make_prompt(point_coords, point_labels, box, mask_input, mask_input_size)
    check_in_image(prompt, image_hw)
    return prompt


def as_object_prompts(points: Any, labels: Any, bboxes: Any) -> list[Prompt]:
    """Ultralytics-style prompts as one `Prompt` per object.

    `points` as [x, y] is one object with one point; [[x, y], ...] is one
    object per point; [[[x, y], ...], ...] gives the points of each object.
    `labels` has the same nesting without the XY axis and defaults to all
    foreground. `bboxes` is [x1, y1, x2, y2] or a list of them, one object each.
    Points and boxes together need one box per object.

    Returns:
        The objects' prompts, all with the same number of points, and all with a box or none.

    Raises:
        ValueError: What is wrong with which part, and what was expected.
    """
    coords = point_labels = boxes = None
    if points is not None:
        coords = _as_float_array(points, "points")
        if coords.size == 0:
            raise ValueError("points is empty; leave it out (None) instead")
        if coords.ndim not in (1, 2, 3) or coords.shape[-1] != 2:
            raise ValueError(f"points must be [x, y], [[x, y], ...] or [[[x, y], ...], ...], got shape {coords.shape}")
        label_ndim = coords.ndim - 1
        coords = coords.reshape(-1, 1, 2) if coords.ndim < 3 else coords  # (B, N, 2)
        if labels is None:
            point_labels = np.ones(coords.shape[:2], dtype=np.int64)
        else:
            point_labels = _as_array(labels, "labels")
            count = coords.shape[0] * coords.shape[1]
            if point_labels.ndim not in (label_ndim, max(label_ndim, 1)) or point_labels.size != count:
                raise ValueError(
                    f"labels must match points: {count} labels shaped like the points without XY, got shape {point_labels.shape}"
                )
            point_labels = point_labels.reshape(coords.shape[:2])  # (B, N)
    elif labels is not None:
        raise ValueError("labels were given without points")
    if bboxes is not None:
        array = _as_float_array(bboxes, "bboxes")
        if array.size == 0:
            raise ValueError("bboxes is empty; leave it out (None) instead")
        boxes = _as_boxes(array)  # (B, 4)
    if coords is None and boxes is None:
        raise ValueError("no prompt: give points and/or bboxes")
    if coords is not None and boxes is not None and coords.shape[0] != boxes.shape[0]:
        raise ValueError(
            f"points and bboxes together need one box per object: {coords.shape[0]} point objects, {boxes.shape[0]} boxes"
        )
    objects = len(coords) if coords is not None else len(boxes)
    return [
        make_prompt(
            None if coords is None else coords[b],
            None if point_labels is None else point_labels[b],
            None if boxes is None else boxes[b],
        )
        for b in range(objects)
    ]


def _as_points(point_coords: Any) -> np.ndarray:
    """(N, 2) XY points as float64, N >= 1."""
    coords = _as_float_array(point_coords, "point_coords")
    if coords.ndim != 2 or coords.shape[1] != 2 or coords.shape[0] == 0:
        raise ValueError(f"point_coords must have shape (N, 2) with N >= 1 (XY pixels), got {coords.shape}")
    return coords


def _as_labels(point_labels: Any, num_points: int) -> np.ndarray:
    """(N,) point labels as int64, each 1 (foreground) or 0 (background)."""
    labels = _as_array(point_labels, "point labels")
    if labels.ndim != 1 or labels.shape[0] != num_points:
        raise ValueError(f"expected {num_points} point labels, one per point, got shape {labels.shape}")
    # Integers or floats only: bools, complex numbers and times are no labels, though numpy would cast them.
    if labels.dtype.kind not in "iuf":
        raise ValueError(f"point labels must be numbers 1 (foreground) or 0 (background), got dtype {labels.dtype}")
    bad = labels[(labels != 0) & (labels != 1)]
    if bad.size:
        raise ValueError(f"point labels must be 1 (foreground) or 0 (background), got {bad[:5].tolist()}")
    return labels.astype(np.int64)


def _as_boxes(boxes: Any) -> np.ndarray:
    """XYXY boxes, (4,) or (B, 4), as (B, 4) float64."""
    array = _as_float_array(boxes, "box")
    if array.ndim == 1:
        array = array[None]
    if array.ndim != 2 or array.shape[1] != 4 or array.shape[0] == 0:
        raise ValueError(f"a box must be [x1, y1, x2, y2] (or (B, 4) boxes), got shape {np.shape(boxes)}")
    return array


def _as_mask_input(mask_input: Any, size: tuple[int, int]) -> np.ndarray:
    """Low-res mask logits, (1, h, w) or (h, w), as (1, h, w) float32."""
    array = _as_float_array(mask_input, "mask_input")
    if array.ndim == 2:
        array = array[None]
    if array.shape != (1, *size):
        raise ValueError(f"mask_input must have shape (1, {size[0]}, {size[1]}) (low-res logits), got {np.shape(mask_input)}")
    largest = np.abs(array).max()
    if largest > np.finfo(np.float32).max:
        raise ValueError(f"mask_input holds {largest:g}, beyond float32 (low-res logits lie within about +-30)")
    return array.astype(np.float32)


def _as_array(value: Any, name: str) -> np.ndarray:
    """`value` as a numpy array of any dtype; ragged nesting is a `ValueError` naming `name`."""
    try:
        return np.asarray(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be numbers nested as an array, got {value!r:.80}") from err


def _as_float_array(value: Any, name: str) -> np.ndarray:
    """`value` as finite float64 numbers; anything else is a `ValueError` naming `name`."""
    array = _as_array(value, name)
    # Casting would silently drop an imaginary part, or turn dates and durations into counts.
    if array.dtype.kind in "cmM":
        raise ValueError(f"{name} must be real numbers, got dtype {array.dtype}")
    try:
        array = array.astype(np.float64, copy=False)
    except (TypeError, ValueError, OverflowError) as err:
        raise ValueError(f"{name} must be numbers, got {value!r:.80}") from err
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return array


def _check_inside(xy: np.ndarray, image_hw: tuple[int, int], what: str) -> None:
    h, w = image_hw
    margin_x, margin_y = OUTSIDE_TOLERANCE * w, OUTSIDE_TOLERANCE * h
    outside = (xy[:, 0] < -margin_x) | (xy[:, 0] > w + margin_x) | (xy[:, 1] < -margin_y) | (xy[:, 1] > h + margin_y)
    if outside.any():
        x, y = xy[outside][0].tolist()
        raise ValueError(f"{what} ({x:g}, {y:g}) lies far outside the {w}x{h} image (coordinates are XY pixels)")


@dataclass(frozen=True)
class ModelFramePrompt:
    """A checked `Prompt` mapped into the model frame for the decoder, with a batch axis of 1."""

    point_coords: np.ndarray | None  # (1, N, 2) float64 XY
    point_labels: np.ndarray | None  # (1, N) int64
    boxes: np.ndarray | None  # (1, 4) float64 XYXY
    mask_input: np.ndarray | None  # (1, 1, h, w) float32 low-res logits


def to_model_frame(prompt: Prompt, transform: ResizeLongestSide, original_size: tuple[int, int]) -> ModelFramePrompt:
    """`prompt`'s coordinates resized with `transform`, as both predictors hand them to the decoder."""
    coords = labels = boxes = mask = None
    if prompt.point_coords is not None:
        coords = transform.apply_coords(prompt.point_coords, original_size)[None]
        labels = prompt.point_labels[None]
    if prompt.box is not None:
        boxes = transform.apply_boxes(prompt.box[None], original_size)
    if prompt.mask_input is not None:
        mask = prompt.mask_input[None]
    return ModelFramePrompt(coords, labels, boxes, mask)
