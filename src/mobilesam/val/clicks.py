"""Click simulation for the ``point`` and ``clicks:K`` protocols (RITM's and SAM's convention).

A click goes to the pixel of a region farthest from the region's boundary:
the argmax of the exact L2 distance transform (``cv2.distanceTransform``,
``DIST_MASK_PRECISE``) of the region padded with a one-pixel zero border, so
the image edge counts as boundary. Ties go to the first pixel in row-major
order. Clicks are (x, y) = (column, row); SAM adds the half pixel itself.

The click always lies inside the region: the distance transform is 0 on
every pixel outside the region (its distance to the nearest zero pixel is
0) and at least 1 on every pixel inside it, so a non-empty region's maximum
is >= 1 and sits on a region pixel. For the next click of ``clicks:K`` the
region is the false negatives or the false positives of the current mask,
so the click never lands on a pixel the mask already has right.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from ..predictor import SamPredictor
from ..prompts import make_prompt
from ..segment import segment_prompts


@dataclass(frozen=True)
class Click:
    """A simulated click: (x, y) pixel and label (1 positive, 0 negative)."""

    xy: tuple[int, int]
    label: int


@dataclass
class ClickTrace:
    """The clicks of one simulated interaction and the mask chosen after each.

    Attributes:
        clicks: The clicks in order; fewer than asked when a mask became exact.
        masks: (H, W) bool mask after each click.
        scores: The model's predicted IoU of each of those masks.
    """

    clicks: list[Click] = field(default_factory=list)
    masks: list[np.ndarray] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)


def farthest_point(region: np.ndarray) -> tuple[tuple[int, int], float]:
    """The pixel of `region` farthest from its boundary and that distance.

    Args:
        region: (H, W) bool.

    Returns:
        ((x, y), distance); distance is 0 (and the pixel meaningless) when the region is empty.
    """
    padded = np.pad(region.astype(np.uint8), 1)
    distance = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    row, col = np.unravel_index(int(np.argmax(distance)), distance.shape)
    return (int(col), int(row)), float(distance[row, col])


def next_click(gt: np.ndarray, pred: np.ndarray) -> Click | None:
    """The corrective click for `pred`: at the centre of the larger error region.

    Positive in the false negatives (gt & ~pred), negative in the false
    positives (pred & ~gt), whichever reaches farther from its boundary;
    ties are positive.

    Args:
        gt: (H, W) bool ground truth.
        pred: (H, W) bool current mask.

    Returns:
        The click, or None when `pred` equals `gt`.
    """
    missed_xy, missed_depth = farthest_point(gt & ~pred)
    spurious_xy, spurious_depth = farthest_point(pred & ~gt)
    if missed_depth == 0 and spurious_depth == 0:
        return None
    if missed_depth >= spurious_depth:
        return Click(missed_xy, 1)
    return Click(spurious_xy, 0)


def simulate_clicks(predictor: SamPredictor, image: np.ndarray, gt: np.ndarray, num_clicks: int) -> ClickTrace:
    """Run the ``clicks:K`` interaction on the predictor's current image.

    Args:
        predictor: A predictor with the image set.
        image: (H, W, 3) uint8 RGB pixels of that image.
        gt: (H, W) bool non-empty ground-truth mask.
        num_clicks: K, the most clicks to give.

    Returns:
        The clicks and the mask after each; it stops early when a mask equals `gt`.
    """
    xy, _ = farthest_point(gt)
    trace = ClickTrace()
    click: Click | None = Click(xy, 1)
    logits = None
    while click is not None:
        trace.clicks.append(click)
        mask, score, logits = predict_step(predictor, image, trace.clicks, logits)
        trace.masks.append(mask)
        trace.scores.append(score)
        click = next_click(gt, mask) if len(trace.clicks) < num_clicks else None
    return trace


def replay_clicks(predictor: SamPredictor, image: np.ndarray, clicks: list[Click]) -> ClickTrace:
    """Give another model the same clicks, each step feeding back its own previous logits.

    Args:
        predictor: A predictor with the image set.
        image: (H, W, 3) uint8 RGB pixels of that image.
        clicks: The clicks of a `simulate_clicks` trace.
    """
    trace = ClickTrace()
    logits = None
    for click in clicks:
        trace.clicks.append(click)
        mask, score, logits = predict_step(predictor, image, trace.clicks, logits)
        trace.masks.append(mask)
        trace.scores.append(score)
    return trace


def predict_step(
    predictor: SamPredictor, image: np.ndarray, clicks: list[Click], previous_logits: np.ndarray | None
) -> tuple[np.ndarray, float, np.ndarray]:
    """One prediction of the interaction: the mask, its predicted IoU and its (1, 256, 256) low-res logits.

    Without previous logits (the first click) three masks are predicted and
    the highest-scoring one is taken; afterwards one mask, with the previous
    logits as `mask_input`.
    """
    coords = np.array([click.xy for click in clicks], dtype=np.float64)  # (N, 2) XY
    labels = np.array([click.label for click in clicks])
    prompt = make_prompt(
        coords, labels, mask_input=previous_logits, mask_input_size=predictor.model.prompt_encoder.mask_input_size
    )
    results = segment_prompts(
        predictor, predictor.embedding, [prompt], image, multimask_output=previous_logits is None, keep_logits=True
    )
    best = int(np.argmax(results.scores))
    return np.asarray(results.masks)[best], float(results.scores[best]), results.low_res_logits[best : best + 1]
