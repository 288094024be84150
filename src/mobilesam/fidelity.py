"""How faithful an engine's masks are to fp32 torch's: the one protocol every agreement figure comes from.

The protocol (`PROTOCOL`, printed by the benchmarks beside their figures):

- images: scikit-image's astronaut (512x512), coffee (400x600) and chelsea
  (300x451) photos, and `demo_image` (768x1024, generated);
- prompts: `demo_prompts` on each (a click; a positive and a negative
  click; a box; a box with a click), multimask output: 12 masks per image;
- expected: eager fp32 torch (`backend="torch"`, the reference's bits);
  measured: the engine end to end, its own embedding and its own decoder,
  through `SamPredictor` as a user calls it;
- figures: the share of mask pixels equal to the expected ones over all
  masks, and the lowest IoU of any one mask with its expected twin (two
  empty masks count as IoU 1).

`auto` and `half` choose from figures measured this way (`backends.auto.MEASURED`),
at the model size and weights the benchmark names (vit_t at 1024, seeded random
weights unless a checkpoint is given).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

PROTOCOL = (
    "masks of astronaut, coffee, chelsea and a generated 768x1024 image, 4 prompts each "
    "(click, two clicks, box, box + click), multimask; engine end to end against eager fp32 torch"
)
# The scikit-image photos of the protocol (`io.samples.CALIBRATION_PHOTOS` never includes them).
PROTOCOL_PHOTOS = ("astronaut", "coffee", "chelsea")


@dataclass(frozen=True)
class Agreement:
    """An engine's masks against fp32 torch's.

    Attributes:
        pixels_equal: Share of all mask pixels equal to fp32's.
        min_iou: Lowest IoU of one mask with fp32's mask for the same prompt; None where
            only the pixel share was measured (figures from before this protocol).
    """

    pixels_equal: float
    min_iou: float | None

    def meets(self, bar: Agreement) -> bool:
        """Whether both figures reach `bar`'s (an unmeasured IoU meets only a bar of 0)."""
        iou_met = not bar.min_iou or (self.min_iou is not None and self.min_iou >= bar.min_iou)
        return self.pixels_equal >= bar.pixels_equal and iou_met


# What the default (`backend="auto"`) must reproduce: fp32's masks, to rounding near the threshold.
FAITHFUL = Agreement(pixels_equal=0.999, min_iou=0.999)
# What reduced precision (`half=True`) may cost at most.
REDUCED = Agreement(pixels_equal=0.995, min_iou=0.0)


def demo_image(h: int = 768, w: int = 1024) -> np.ndarray:
    """A deterministic (h, w, 3) uint8 image: gradients and discs (for when no photo is given)."""
    yy, xx = np.mgrid[0:h, 0:w]
    image = np.stack([xx / w * 255, yy / h * 255, (xx + yy) / (h + w) * 255], axis=-1)
    rng = np.random.default_rng(0)
    for _ in range(6):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(20, min(h, w) / 3)
        image[(yy - cy) ** 2 + (xx - cx) ** 2 < r**2] = rng.uniform(0, 255, 3)
    return image.astype(np.uint8)


def demo_prompts(h: int, w: int) -> list[dict[str, np.ndarray]]:
    """A click, two clicks, a box, and a box with a click, spread over an (h, w) image."""
    box = np.array([0.2 * w, 0.25 * h, 0.7 * w, 0.8 * h])
    return [
        dict(point_coords=np.array([[0.5 * w, 0.5 * h]]), point_labels=np.array([1])),
        dict(point_coords=np.array([[0.3 * w, 0.4 * h], [0.6 * w, 0.6 * h]]), point_labels=np.array([1, 0])),
        dict(box=box),
        dict(point_coords=np.array([[0.45 * w, 0.5 * h]]), point_labels=np.array([1]), box=box),
    ]


def protocol_images() -> dict[str, np.ndarray]:
    """name -> (H, W, 3) uint8 RGB image of the protocol.

    Raises:
        ImportError: scikit-image is not installed (its wheel ships the photos).
    """
    try:
        from skimage import data
    except ImportError as err:
        raise ImportError(f"the agreement photos come with scikit-image: pip install scikit-image ({err})") from None
    return {**{name: getattr(data, name)() for name in PROTOCOL_PHOTOS}, "generated": demo_image()}


def compare_masks(expected: Sequence[np.ndarray], measured: Sequence[np.ndarray]) -> Agreement:
    """The agreement of paired boolean masks (any shapes, pair by pair)."""
    from .masks import mask_iou

    equal = total = 0
    lowest = 1.0
    for want, got in zip(expected, measured, strict=True):
        equal, total = equal + int((want == got).sum()), total + want.size
        lowest = min(lowest, float(mask_iou(want, got)))
    return Agreement(equal / total if total else 1.0, lowest)
