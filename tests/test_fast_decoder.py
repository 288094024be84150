"""The fast backends' decoder rewrites (`mobilesam.fast_decoder`) against the model's own modules."""

from __future__ import annotations

import copy

import pytest
import torch

from mobilesam.fast_decoder import _banded_resize, _resize_matrix, postprocess_masks, upscaled_masks
from mobilesam.registry import build_from_config, get_config
from reference import randomize


@pytest.fixture(scope="module")
def model():
    return randomize(build_from_config(get_config("vit_t")), seed=5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_upscaled_masks_are_the_models_upscaling(model, dtype):
    """fp32 moves neighbouring logits as one 64-bit word; fp64 has no wider word and copies them one by one."""
    decoder = copy.deepcopy(model.mask_decoder).to(dtype)
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randn(3, 64 * 64, 256, generator=generator, dtype=dtype)
    mask_weights = torch.randn(3, 4, 32, generator=generator, dtype=dtype)
    features = tokens.transpose(1, 2).view(3, 256, 64, 64)  # the transformer's output as the decoder hands it on
    with torch.inference_mode():
        want = decoder.masks_from_weights(mask_weights, features)
        got = upscaled_masks(decoder, mask_weights, features)
    assert got.shape == want.shape == (3, 4, 256, 256)
    assert float((got - want).abs().max()) <= 1e-5 * float(want.abs().max())


@pytest.mark.parametrize(
    ("input_size", "original_size"),
    [
        ((1024, 1024), (512, 512)),
        ((1024, 683), (300, 200)),
        ((768, 1024), (600, 800)),
        ((1024, 1024), (1024, 1024)),
        ((1024, 1024), (37, 37)),
        ((1024, 16), (640, 10)),
        ((683, 1024), (1000, 1500)),  # larger than the input: the model's own resizes
    ],
)
def test_postprocess_is_the_models_resize(model, input_size, original_size):
    logits = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(1)) * 10
    want = model.postprocess_masks(logits, input_size, original_size)
    got = postprocess_masks(model, logits, input_size, original_size)
    assert got.shape == want.shape == (2, 3, *original_size)
    assert float((got - want).abs().max()) <= 2e-6 * float(want.abs().max())


@pytest.mark.parametrize(
    ("padded", "unpadded", "original"), [(1024, 1024, 512), (1024, 683, 300), (1024, 10, 640), (1024, 1024, 37)]
)
def test_banded_resize_holds_every_weight(padded, unpadded, original):
    """Put back together, the bands are the dense matrix: nothing they skip is anything but an exact zero."""
    dense = _resize_matrix(256, padded, unpadded, original)
    banded = _banded_resize(256, padded, unpadded, original)
    rebuilt = torch.zeros_like(dense)
    for rows, start, weight in banded.blocks:
        rebuilt[rows, start : start + banded.width] = weight
    assert torch.equal(rebuilt, dense)
