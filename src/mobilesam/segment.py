"""Checked prompts on an image embedding to `Results`: the one path of the API, batch labeling, the service and validation."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .embedding import ImageEmbedding
from .predictor import SamPredictor
from .prompts import Prompt
from .results import Results


def segment_prompts(
    predictor: SamPredictor,
    embedding: ImageEmbedding[torch.Tensor],
    objects: Sequence[Prompt],
    image: np.ndarray,
    *,
    multimask_output: bool = False,
    keep_logits: bool = False,
    path: str | None = None,
) -> Results:
    """Each object's masks on `embedding` (1, or 3 with `multimask_output`), in the objects' order.

    Objects whose prompts have the same shape (number of points, a box or
    not, a mask or not) are decoded together; SAM's decoder sees each object
    exactly as `SamPredictor.predict` would. In `Results` objects with fewer
    points are padded with label -1 (SAM's "not a point"), and objects
    without a box get a NaN box when others have one.

    Args:
        predictor: Whose backend decodes and whose transform maps the prompts.
        embedding: The image's embedding (`SamPredictor.embed`).
        objects: One prompt per object, checked against this image (`mobilesam.prompts.check_in_image`).
        image: (H, W, 3) uint8 RGB pixels of the embedded image, for `Results.orig_img`.
        multimask_output: Three candidate masks per object instead of the best one.
        keep_logits: Keep each mask's (256, 256) low-res logits in `Results.low_res_logits`.
        path: The image's path, for `Results`.

    Raises:
        ValueError: No objects.
    """
    if not objects:
        raise ValueError("no objects to segment: give points or a box")
    groups: dict[tuple[int | None, bool, bool], list[int]] = {}
    for index, prompt in enumerate(objects):
        groups.setdefault(prompt.layout, []).append(index)
    masks: list[np.ndarray] = [np.empty(0)] * len(objects)  # per object: (C, H, W) bool
    scores: list[np.ndarray] = [np.empty(0)] * len(objects)  # (C,)
    logits: list[np.ndarray] = [np.empty(0)] * len(objects)  # (C, 256, 256)
    for members in groups.values():
        decoded = predictor.decode_prompts(embedding, [objects[i] for i in members], multimask_output, return_logits=False)
        for position, index in enumerate(members):
            masks[index], scores[index], logits[index] = (output[position] for output in decoded)
    per_object = len(scores[0])
    points, labels, boxes = prompt_rows(objects, per_object)
    return Results(
        orig_img=image,
        masks=np.concatenate(masks),
        scores=np.concatenate(scores).astype(np.float32),
        points=points,
        labels=labels,
        bboxes=boxes,
        low_res_logits=np.concatenate(logits).astype(np.float32) if keep_logits else None,
        path=path,
    )


def prompt_rows(objects: Sequence[Prompt], per_object: int) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """`Results`' prompt arrays for M objects with `per_object` masks each.

    Points (M', P, 2) and labels (M', P), M' = M * per_object, padded to the most points P with label -1
    (None without points); boxes (M', 4), NaN for an object without one (None when no object has one).
    """
    width = max(0 if p.point_coords is None else len(p.point_coords) for p in objects)
    points = labels = boxes = None
    if width:
        points = np.zeros((len(objects), width, 2))
        labels = np.full((len(objects), width), -1, dtype=np.int64)
        for index, prompt in enumerate(objects):
            if prompt.point_coords is not None:
                points[index, : len(prompt.point_coords)] = prompt.point_coords
                labels[index, : len(prompt.point_labels)] = prompt.point_labels
        points, labels = np.repeat(points, per_object, axis=0), np.repeat(labels, per_object, axis=0)
    if any(prompt.box is not None for prompt in objects):
        rows = [np.full(4, np.nan) if prompt.box is None else prompt.box for prompt in objects]
        boxes = np.repeat(rows, per_object, axis=0)
    return points, labels, boxes
