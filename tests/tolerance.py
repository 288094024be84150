"""How far two correct fp32 runs of the same network may drift apart, on every CPU we test on.

Ours and the reference compute the same sums, but not always in the same
order: MKL and oneDNN choose their blocking and how a sum is split between
threads by the shape of the problem and the instruction set (AVX2 on AMD
EPYC, AVX-512/AMX on Intel Xeon), and our decoder computes the image-side
projections once per image where the reference computes them per prompt.
Each reordered layer moves a result by a few units in the last place of the
values it works on, so the bound is a number of ulps of the tensor's largest
value, per layer the values have passed through. A real mistake (a weight
swapped or scaled by 0.1%) moves results by ~1e-3 of their size, a hundred
times more than this bound at our depths; `test_model_oracle` shows it fails.
"""

from __future__ import annotations

import numpy as np
import torch

from mobilesam.families import FAMILIES
from mobilesam.modeling import Sam

FP32_ULP = float(torch.finfo(torch.float32).eps)
# Measured between ours and the reference at two threads: at most 1.1 ulps per
# layer on an AMX Xeon's AVX-512 kernels and on its forced AVX2 ones; 4 leaves room.
ULPS_PER_LAYER = 4


def encoder_layers(model: Sam) -> int:
    """Layers an image embedding passes through: residual blocks and downsamplings, plus patch embedding and neck."""
    layer_types = tuple(t for family in FAMILIES.values() for t in family.layer_types)
    return 2 + sum(isinstance(m, layer_types) for m in model.image_encoder.modules())


def decoder_layers(model: Sam) -> int:
    """Layers from embedding to logits: four per two-way block, the final attention, upscaling, output MLPs."""
    return 4 * len(model.mask_decoder.transformer.layers) + 3


def rounding_bound(expected: torch.Tensor | np.ndarray, layers: int) -> float:
    """The largest absolute difference allowed from `expected` after `layers` reordered layers."""
    largest = float(np.abs(np.asarray(expected, dtype=np.float64)).max()) if np.size(expected) else 0.0
    return ULPS_PER_LAYER * layers * FP32_ULP * max(largest, 1.0)


def assert_close(ours, theirs, what: str, layers: int) -> None:
    """`ours` equals `theirs` up to fp32 rounding through `layers` layers (tensors or arrays)."""
    ours, theirs = _numpy(ours), _numpy(theirs)
    assert ours.shape == theirs.shape, f"{what}: shape {ours.shape} != {theirs.shape}"
    if ours.size == 0:
        return
    diff = float(np.abs(ours.astype(np.float64) - theirs).max())
    bound = rounding_bound(theirs, layers)
    assert diff <= bound, f"{what}: max abs diff {diff:.3g} exceeds the rounding bound {bound:.3g} ({layers} layers)"


def assert_masks_agree(ours: np.ndarray, theirs: np.ndarray, reference_logits: np.ndarray, what: str, layers: int) -> None:
    """Binary masks equal, but for pixels whose reference logit lies within rounding of the threshold 0."""
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype == np.bool_, what
    flipped = ours != theirs
    bound = rounding_bound(reference_logits, layers)
    outside = flipped & (np.abs(reference_logits) > bound)
    assert not outside.any(), f"{what}: {int(outside.sum())} mask pixels differ whose logit is beyond rounding ({bound:.3g})"


def _numpy(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().float().cpu().numpy()
    return np.asarray(value)
