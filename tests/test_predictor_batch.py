"""`SamPredictor.set_image_batch` / `predict_batch` (sam2's API): several images, each with its own prompts."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from images import sample_images
from mobilesam import SamPredictor
from mobilesam.prompts import check_prompt
from mobilesam.registry import build_from_config, get_config
from reference import randomize


@pytest.fixture(scope="module")
def predictor():
    model = randomize(build_from_config(dataclasses.replace(get_config("vit_t"), image_size=256)), seed=6)
    return SamPredictor(model)


def _alone(predictor: SamPredictor, image: np.ndarray, **prompt) -> tuple:
    single = SamPredictor(predictor.model, predictor.backend)
    single.set_image(image)
    return single.predict(**prompt)


def test_each_image_gets_its_own_prompts_and_the_masks_of_predicting_it_alone(predictor):
    images = [sample_images()[name] for name in ("chelsea", "coffee", "astronaut")]
    boxes = np.array([[10.0, 20.0, 200.0, 250.0], [150.0, 30.0, 440.0, 290.0], [0.0, 0.0, 450.0, 299.0]])
    points = np.array([[120.0, 90.0], [300.0, 200.0]])
    predictor.set_image_batch(images)
    masks, scores, logits = predictor.predict_batch(
        point_coords_batch=[None, points, np.array([[[250.0, 250.0]], [[100.0, 400.0]]])],
        point_labels_batch=[None, np.array([1, 0]), np.array([[1], [1]])],
        box_batch=[boxes, None, None],
        multimask_output=False,
    )
    assert [m.shape for m in masks] == [(3, 1, 300, 451), (1, 400, 600), (2, 1, 512, 512)]
    assert [s.shape for s in scores] == [(3, 1), (1,), (2, 1)]
    single = SamPredictor(predictor.model, predictor.backend)
    single.set_image(images[0])
    # Mapped as `predict` maps a box (float64, then float32), so the decoder gets the same numbers.
    in_frame = torch.as_tensor(single.transform.apply_boxes(boxes, images[0].shape[:2]), dtype=torch.float)
    for got, want in zip(
        (masks[0], scores[0], logits[0]), single.predict_torch(None, None, boxes=in_frame, multimask_output=False)
    ):
        np.testing.assert_array_equal(got, want.numpy())
    alone = _alone(predictor, images[1], point_coords=points, point_labels=np.array([1, 0]), multimask_output=False)
    for got, want in zip((masks[1], scores[1], logits[1]), alone):
        np.testing.assert_array_equal(got, want)


def test_a_mask_prompt_per_image_round_trips(predictor):
    images = [sample_images()["chelsea"], sample_images()["generated"]]
    predictor.set_image_batch(images)
    clicks = [np.array([[100.0, 100.0]]), np.array([[50.0, 60.0]])]
    first = predictor.predict_batch(clicks, [np.array([1]), np.array([1])])
    best = [low_res[np.argmax(score)][None] for score, low_res in zip(first[1], first[2])]
    refined = predictor.predict_batch(clicks, [np.array([1]), np.array([1])], mask_input_batch=best, multimask_output=False)
    for image, click, mask, got in zip(images, clicks, best, refined[0]):
        want = _alone(predictor, image, point_coords=click, point_labels=np.array([1]), mask_input=mask, multimask_output=False)
        np.testing.assert_array_equal(got, want[0])


def test_batch_errors_say_what_is_wrong(predictor):
    predictor.reset_image()
    with pytest.raises(RuntimeError, match=r"call .set_image_batch\(images\) before predict_batch"):
        predictor.predict_batch([np.array([[1.0, 1.0]])], [np.array([1])])
    with pytest.raises(ValueError, match="set_image_batch takes a non-empty list"):
        predictor.set_image_batch([])
    predictor.set_image_batch([sample_images()["chelsea"], sample_images()["generated"]])
    with pytest.raises(ValueError, match="point_coords_batch has 1 entries for 2 images"):
        predictor.predict_batch([np.array([[1.0, 1.0]])], [np.array([1])])
    with pytest.raises(ValueError, match="image 1 of the batch: expected 1 point labels"):
        predictor.predict_batch([np.array([[1.0, 1.0]])] * 2, [np.array([1]), np.array([1, 0])])
    with pytest.raises(ValueError, match=r"image 0 of the batch: the prompts disagree on the number of objects: \[2, 3\]"):
        predictor.predict_batch([np.zeros((2, 1, 2)), None], [np.ones((2, 1)), None], box_batch=[np.zeros((3, 4)), None])
    with pytest.raises(RuntimeError, match="no image is set"):
        predictor.predict(point_coords=np.array([[1.0, 1.0]]), point_labels=np.array([1]))


def test_a_prompt_checked_at_the_boundary_predicts_like_predict(predictor):
    image = sample_images()["coffee"]
    predictor.set_image(image)
    mask_size = predictor.model.prompt_encoder.mask_input_size
    prompt = check_prompt(image.shape[:2], mask_size, [[300, 200], [100, 50]], [1, 0], [50, 40, 500, 380])
    assert prompt.point_coords.dtype == np.float64 and prompt.point_labels.tolist() == [1, 0] and prompt.box.shape == (4,)
    expected = predictor.predict(np.array([[300, 200], [100, 50]]), np.array([1, 0]), np.array([50, 40, 500, 380]))
    for got, want in zip(predictor.predict_prompt(prompt), expected):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="point_labels were given without point_coords"):
        check_prompt(image.shape[:2], mask_size, None, [1])
    with pytest.raises(ValueError, match="lies far outside the 600x400 image"):
        check_prompt(image.shape[:2], mask_size, [[5000, 10]], [1])
