"""Prompt protocols of `mobilesam val`: how each ground-truth object is prompted.

Every protocol prompts each ground-truth (GT) instance on its own, on its
image's embedding, and scores the chosen mask by its IoU with the GT mask.
All are deterministic; the only randomness, box jitter, comes from
``numpy.random.default_rng((seed, image index, instance index))``.

``box``, ``box:J``
    The GT mask's tight box in pixel-edge coordinates, XYXY =
    (x_min, y_min, x_max + 1, y_max + 1) — COCO's `bbox` as corners. One
    mask (``multimask_output=False``). With jitter J > 0 each coordinate
    moves by Normal(0, J x the box's width) noise (x) or height (y), is
    clipped to the image, and the corners are re-sorted so x1 <= x2, y1 <= y2.

``point``
    One positive click at the GT pixel farthest from the mask's boundary (see
    `mobilesam.val.clicks.farthest_point`). Three masks
    (``multimask_output=True``); the one with the highest predicted IoU counts.

``clicks:K`` (K >= 1)
    Interactive simulation as in SAM's and RITM's evaluation. Click 1 is the
    ``point`` click and its prediction. Each later click goes to the centre of
    the largest error region of the current mask: false negatives
    (GT and not predicted) get a positive click, false positives a negative
    one, whichever region reaches farther from its boundary (ties: positive);
    see `mobilesam.val.clicks.next_click`. The prediction uses all clicks so
    far, ``multimask_output=False``, and the previous chosen mask's low-res
    logits as ``mask_input``. A mask equal to the GT gets no further click and
    keeps IoU 1 for the remaining steps. The mIoU is after click K; the
    report also lists the mIoU after each click 1..K.

``everything``
    The automatic mask generator on the whole image (grid and thresholds
    configurable); each GT is matched to the generated mask with the highest
    IoU (one generated mask may match several GTs), IoU 0 when the generator
    keeps no mask.

With a teacher model the same prompts go to the teacher and the student's
mask is scored against the teacher's (the MobileSAM paper's measure):
``box`` and ``point`` are the same prompts; ``clicks:K`` replays the
student's clicks, the teacher feeding back its own previous logits;
``everything`` compares the masks each model's generator matches to the GT.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from ..masks import batched_mask_to_box

PROTOCOL_SYNTAX = "box, box:JITTER, point, clicks:K, everything"


@dataclass(frozen=True)
class Protocol:
    """A parsed protocol.

    Attributes:
        name: Canonical spelling, used as the report key ("box", "box:0.1", "clicks:5").
        kind: "box", "point", "clicks" or "everything".
        clicks: Number of clicks (1 for "point", K for "clicks:K", 0 otherwise).
        jitter: Box jitter as a fraction of the box side (0 for none).
    """

    name: str
    kind: str
    clicks: int = 0
    jitter: float = 0.0


def parse_protocols(specs: Iterable[str]) -> list[Protocol]:
    """Parse protocol names (each may be comma-separated), dropping repeats, keeping order.

    Raises:
        ValueError: An unknown protocol, or a bad K or jitter; the message lists the syntax.
    """
    protocols = [parse_protocol(part) for spec in specs for part in spec.split(",") if part.strip()]
    if not protocols:
        raise ValueError(f"no protocol given; choose from {PROTOCOL_SYNTAX}")
    unique: dict[str, Protocol] = {}
    for protocol in protocols:
        unique.setdefault(protocol.name, protocol)
    return list(unique.values())


def parse_protocol(spec: str) -> Protocol:
    """Parse one protocol: "box", "box:0.1", "point", "clicks:5" or "everything".

    Raises:
        ValueError: Unknown name, K < 1, negative or non-finite jitter, or an argument where none is taken.
    """
    text = spec.strip().lower()
    kind, _, argument = text.partition(":")
    if kind in ("point", "everything") and not argument:
        return Protocol(kind, kind, clicks=1 if kind == "point" else 0)
    if kind == "box":
        if not argument:
            return Protocol("box", "box")
        try:
            jitter = float(argument)
        except ValueError:
            jitter = float("nan")
        if not np.isfinite(jitter) or jitter < 0:
            raise ValueError(f"box:JITTER needs a jitter >= 0 (a fraction of the box side, e.g. box:0.1), got {spec!r}")
        return Protocol(f"box:{jitter:g}", "box", jitter=jitter) if jitter > 0 else Protocol("box", "box")
    if kind == "clicks":
        if not argument.isdigit() or int(argument) < 1:
            raise ValueError(f"clicks:K needs a whole number of clicks K >= 1 (e.g. clicks:5), got {spec!r}")
        return Protocol(f"clicks:{int(argument)}", "clicks", clicks=int(argument))
    raise ValueError(f"unknown protocol {spec!r}; choose from {PROTOCOL_SYNTAX}")


def mask_box(mask: np.ndarray) -> np.ndarray:
    """(4,) float64 XYXY box prompt of a non-empty (H, W) bool mask, in pixel-edge coordinates (x_max + 1, y_max + 1)."""
    box = batched_mask_to_box(torch.from_numpy(np.ascontiguousarray(mask, dtype=bool)), pixel_edges=True)
    return box.numpy().astype(np.float64)


def jitter_box(box: np.ndarray, jitter: float, image_hw: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Move each XYXY coordinate by Normal(0, jitter x box side) noise, clip to the image, re-sort the corners.

    Args:
        box: (4,) XYXY.
        jitter: Noise scale as a fraction of the box's width (x) and height (y).
        image_hw: (H, W) the box is clipped to.
        rng: The source of the noise (four draws).
    """
    h, w = image_hw
    side = np.array([box[2] - box[0], box[3] - box[1]] * 2)
    moved = box + rng.normal(size=4) * jitter * side
    moved = np.clip(moved, 0, [w, h, w, h])
    return np.array([min(moved[0], moved[2]), min(moved[1], moved[3]), max(moved[0], moved[2]), max(moved[1], moved[3])])
