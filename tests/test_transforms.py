"""transforms.py against the reference's ResizeLongestSide: identical images and coordinates."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mobile_sam.utils.transforms import ResizeLongestSide as ReferenceResize

from images import generated_image, sample_images
from mobilesam.transforms import ResizeLongestSide, get_preprocess_shape
from reference import mobile_sam  # noqa: F401  (imports the reference quietly)

IMAGES = {
    **sample_images(),
    "tiny": generated_image(5, 3, seed=1),
    "tall": generated_image(700, 90, seed=2),
    "big": generated_image(1100, 1500, seed=3),
}


@pytest.mark.parametrize("name", list(IMAGES))
def test_apply_image_is_pixel_identical(name):
    image = IMAGES[name]
    ours, reference = ResizeLongestSide(1024), ReferenceResize(1024)
    resized = ours.apply_image(image)
    assert max(resized.shape[:2]) == 1024 and resized.dtype == np.uint8
    assert np.array_equal(resized, reference.apply_image(image))


@pytest.mark.parametrize("size", [(1, 1), (5, 3), (300, 451), (683, 1024), (1999, 3), (1024, 1024)])
def test_preprocess_shape_matches(size):
    assert get_preprocess_shape(*size, 1024) == ReferenceResize.get_preprocess_shape(*size, 1024)


def test_coords_and_boxes_match_exactly():
    rng = np.random.default_rng(0)
    ours, reference = ResizeLongestSide(1024), ReferenceResize(1024)
    for size in [(300, 451), (123, 457), (700, 90)]:
        coords = rng.uniform(0, 500, (7, 2))
        boxes = rng.uniform(0, 500, (3, 4))
        assert np.array_equal(ours.apply_coords(coords, size), reference.apply_coords(coords, size))
        assert np.array_equal(ours.apply_boxes(boxes, size), reference.apply_boxes(boxes, size))
        for dtype in (torch.float32, torch.float64, torch.int64):
            coords_t = torch.as_tensor(coords * 3).to(dtype)
            boxes_t = torch.as_tensor(boxes).to(dtype)
            ours_c, ref_c = ours.apply_coords_torch(coords_t, size), reference.apply_coords_torch(coords_t, size)
            ours_b, ref_b = ours.apply_boxes_torch(boxes_t, size), reference.apply_boxes_torch(boxes_t, size)
            if dtype == torch.float64:
                # The reference drops float64 to float32 before scaling; we keep the precision.
                assert ours_c.dtype == torch.float64
                assert torch.allclose(ours_c.float(), ref_c) and torch.allclose(ours_b.float(), ref_b)
            else:
                assert ours_c.dtype == ref_c.dtype and ours_b.dtype == ref_b.dtype
                assert torch.equal(ours_c, ref_c) and torch.equal(ours_b, ref_b)


def test_inputs_are_not_mutated():
    coords = np.array([[10.0, 20.0]])
    ResizeLongestSide(1024).apply_coords(coords, (100, 200))
    assert coords.tolist() == [[10.0, 20.0]]


def test_apply_image_torch_is_close_to_reference():
    image = torch.rand((2, 3, 300, 451))
    assert torch.allclose(
        ResizeLongestSide(1024).apply_image_torch(image), ReferenceResize(1024).apply_image_torch(image), atol=1e-6
    )


@pytest.mark.parametrize("name", ["astronaut", "tall", "tiny"])
def test_numpy_preprocessing_gives_the_models_bits(name):
    from mobilesam import build_sam
    from mobilesam.transforms import normalize_and_pad

    model = build_sam("vit_t")
    resized = ResizeLongestSide(1024).apply_image(IMAGES[name])
    expected = model.preprocess(torch.as_tensor(resized).permute(2, 0, 1).contiguous()[None])
    got = normalize_and_pad(resized, model.pixel_mean.flatten().tolist(), model.pixel_std.flatten().tolist(), 1024)
    assert got.dtype == np.float32 and got.shape == (1, 3, 1024, 1024)
    assert np.array_equal(got, expected.numpy())
