"""How faithful an engine's masks are to fp32 torch's: the one protocol every agreement figure comes from.

The protocol (`PROTOCOL`, printed by the benchmarks beside their figures):

- images: scikit-image's astronaut (512x512), coffee (400x600) and chelsea
  (300x451) photos, and `probe.demo_image` (768x1024, generated);
- prompts: `probe.demo_prompts` on each (a click; a positive and a negative
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
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .backends import Backend
    from .modeling import Sam

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


def protocol_images() -> dict[str, np.ndarray]:
    """name -> (H, W, 3) uint8 RGB image of the protocol.

    Raises:
        ImportError: scikit-image is not installed (its wheel ships the photos).
    """
    from .probe import demo_image

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


def engine_agreement(model: Sam, backend: Backend, images: dict[str, np.ndarray] | None = None) -> Agreement:
    """The agreement of `backend`'s masks with eager fp32 torch's on `model`, by the protocol.

    Args:
        model: The model both run.
        backend: The engine measured, made for `model`.
        images: The images; default `protocol_images()`.
    """
    from .predictor import SamPredictor
    from .probe import demo_prompts

    expected, measured = SamPredictor(model, backend="torch"), SamPredictor(model, backend=backend)
    want_masks: list[np.ndarray] = []
    got_masks: list[np.ndarray] = []
    for image in (protocol_images() if images is None else images).values():
        expected.set_image(image)
        measured.set_image(image)
        for prompt in demo_prompts(*image.shape[:2]):
            want_masks.extend(expected.predict(**prompt)[0])
            got_masks.extend(measured.predict(**prompt)[0])
    return compare_masks(want_masks, got_masks)
