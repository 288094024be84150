"""`mobilesam.SamPredictor` against `mobile_sam.SamPredictor` on real photos at the same random weights.

One prompt at a time, ours runs the reference's kernels on the reference's
shapes: the same bits. Several boxes at once (`predict_torch`) go through
our batched decoder, which rounds differently (`tolerance`).
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch

from images import sample_images
from mobilesam import ImageEmbedding, SamPredictor
from reference import mobile_sam, paired_models
from tolerance import assert_close, assert_masks_agree, decoder_layers, encoder_layers


@pytest.fixture(scope="module")
def predictors():
    ours, reference = paired_models("vit_t", seed=21)
    return SamPredictor(ours, backend="torch"), mobile_sam.SamPredictor(reference)


def _prompts(h: int, w: int, rng: np.random.Generator) -> dict[str, dict]:
    def point() -> list[float]:
        return [rng.uniform(0, w - 1), rng.uniform(0, h - 1)]

    x1, x2 = sorted(rng.uniform(0, w - 1, 2))
    y1, y2 = sorted(rng.uniform(0, h - 1, 2))
    box = np.array([x1, y1, x2, y2])
    return {
        "point": dict(point_coords=np.array([point()]), point_labels=np.array([1])),
        "box": dict(box=box),
        "point_and_box": dict(point_coords=np.array([point()]), point_labels=np.array([0]), box=box),
        "multi_point": dict(point_coords=np.array([point() for _ in range(4)]), point_labels=np.array([1, 0, 1, 1])),
    }


def _assert_same(ours: tuple, theirs: tuple, what: str) -> None:
    """`predict`'s (masks, iou, low-res logits) equal bit for bit."""
    for got, want, name in zip(ours, theirs, ("masks", "iou", "low-res logits")):
        assert got.shape == want.shape and got.dtype == want.dtype, f"{what}: {name}"
        assert np.array_equal(got, want), f"{what}: {name} differ"


@pytest.mark.parametrize("name", list(sample_images()))
def test_predict_matches_reference(predictors, name):
    ours, reference = predictors
    image = sample_images()[name]
    ours.set_image(image)
    reference.set_image(image)
    assert ours.original_size == tuple(reference.original_size)
    assert ours.input_size == tuple(reference.input_size)
    assert torch.equal(ours.get_image_embedding(), reference.get_image_embedding())

    rng = np.random.default_rng(zlib.crc32(name.encode()))
    for case, prompt in _prompts(*image.shape[:2], rng).items():
        for multimask in (True, False):
            what = f"{name}/{case}/multimask={multimask}"
            _assert_same(
                ours.predict(**prompt, multimask_output=multimask),
                reference.predict(**prompt, multimask_output=multimask),
                what,
            )
        logits = ours.predict(**prompt, return_logits=True)
        _assert_same(logits, reference.predict(**prompt, return_logits=True), f"{name}/{case}/logits")

        # Feed the best low-res logits back, as an interactive tool does.
        best = logits[2][np.argmax(logits[1])][None]
        _assert_same(
            ours.predict(**prompt, mask_input=best, multimask_output=False),
            reference.predict(**prompt, mask_input=best, multimask_output=False),
            f"{name}/{case}/mask_input",
        )


def test_bgr_input_matches_reference(predictors):
    ours, reference = predictors
    image = sample_images()["coffee"]
    bgr = np.ascontiguousarray(image[:, :, ::-1])
    ours.set_image(bgr, image_format="BGR")
    reference.set_image(bgr, image_format="BGR")
    prompt = dict(point_coords=np.array([[300.0, 200.0]]), point_labels=np.array([1]))
    _assert_same(ours.predict(**prompt), reference.predict(**prompt), "bgr")


def test_batched_boxes_through_predict_torch_match_reference(predictors):
    ours, reference = predictors
    image = sample_images()["chelsea"]
    ours.set_image(image)
    reference.set_image(image)
    boxes = torch.tensor([[10.0, 20.0, 200.0, 250.0], [150.0, 30.0, 440.0, 290.0], [0.0, 0.0, 450.0, 299.0]])
    our_boxes = ours.transform.apply_boxes_torch(boxes, image.shape[:2])
    ref_boxes = reference.transform.apply_boxes_torch(boxes, image.shape[:2])
    assert torch.equal(our_boxes, ref_boxes)
    layers = encoder_layers(ours.model) + decoder_layers(ours.model)
    for multimask in (True, False):
        what = f"batched boxes multimask={multimask}"
        our_masks, our_iou, our_low_res = ours.predict_torch(None, None, boxes=our_boxes, multimask_output=multimask)
        ref_masks, ref_iou, ref_low_res = reference.predict_torch(None, None, boxes=ref_boxes, multimask_output=multimask)
        ref_logits = reference.predict_torch(None, None, boxes=ref_boxes, multimask_output=multimask, return_logits=True)[0]
        assert our_masks.shape == (3, 3 if multimask else 1, *image.shape[:2])
        assert_close(our_low_res, ref_low_res, f"{what}: low-res logits", layers)
        assert_close(our_iou, ref_iou, f"{what}: iou", layers)
        assert_masks_agree(our_masks.numpy(), ref_masks.numpy(), ref_logits.numpy(), f"{what}: masks", layers)


def test_a_kept_embedding_predicts_like_the_image_it_came_from(predictors):
    ours, _ = predictors
    images = sample_images()
    point = dict(point_coords=np.array([[60.0, 50.0]]), point_labels=np.array([1]))
    ours.set_image(images["generated"])
    kept = ours.embedding
    expected = ours.predict(**point)
    ours.set_image(images["chelsea"])
    ours.set_embedding(kept)
    for got, want in zip(ours.predict(**point), expected):
        np.testing.assert_array_equal(got, want)
    embedded = ours.embed(images["generated"])
    assert ours.embedding is kept, "embed leaves the current image as it is"
    assert torch.equal(embedded.features, kept.features) and embedded.original_size == kept.original_size
    with pytest.raises(ValueError, match=r"image embedding features must be \(1, C, h, w\)"):
        ImageEmbedding(kept.features[0], kept.original_size, kept.input_size)
    with pytest.raises(TypeError, match="set_embedding takes an ImageEmbedding"):
        ours.set_embedding(kept.features)
