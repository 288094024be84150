"""SAM's prompt simulation for training: noisy boxes, points inside masks, corrective clicks.

All coordinates are XY in the model frame (the resized image, before padding).
"""

from __future__ import annotations

import numpy as np
import torch

from ..masks import batched_mask_to_box


def noisy_box(mask: np.ndarray, rng: np.random.Generator, noise: float, max_noise: float) -> np.ndarray:
    """The XYXY box of an (H, W) bool mask, each side moved by N(0, noise x side length), at most `max_noise` pixels (SAM)."""
    box = (
        batched_mask_to_box(torch.from_numpy(np.ascontiguousarray(mask, dtype=bool)), pixel_edges=True).numpy().astype(np.float64)
    )
    side = np.array([box[2] - box[0], box[3] - box[1]] * 2)
    jitter = np.clip(rng.normal(0.0, 1.0, 4) * noise * side, -max_noise, max_noise)
    h, w = mask.shape
    return np.clip(box + jitter, 0, [w, h, w, h])


def point_inside(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A pixel of an (H, W) bool mask, uniformly at random, as (x, y)."""
    rows, cols = np.nonzero(mask)
    pick = rng.integers(len(rows))
    return np.array([cols[pick], rows[pick]], dtype=np.float64)


def corrective_clicks(
    logits: torch.Tensor, targets: torch.Tensor, image_size: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """One click per prompt, uniformly in the error region of the current mask (SAM's iterative training).

    A click on a missed pixel is positive, on a wrong pixel negative; a mask
    without errors gets a padding point (label -1).

    Args:
        logits: (N, h, w) low-res mask logits over the padded input.
        targets: (N, h, w) {0, 1} ground truth on the same grid.
        image_size: Side of the padded model input, to scale grid cells to pixels.
        generator: Source of randomness (CPU).

    Returns:
        coords (N, 1, 2) XY model frame, labels (N, 1).
    """
    errors = ((logits > 0) != (targets > 0.5)).flatten(1).float().cpu()  # (N, h*w)
    empty = errors.sum(1) == 0
    errors[empty, 0] = 1.0
    cells = torch.multinomial(errors, 1, generator=generator).squeeze(1)
    width = logits.shape[-1]
    scale = image_size / width
    xy = torch.stack([cells % width, cells // width], dim=1).float() * scale + scale / 2
    labels = targets.flatten(1).cpu()[torch.arange(len(cells)), cells].round().long()
    labels[empty] = -1
    return xy[:, None].to(logits.device), labels[:, None].to(logits.device)
