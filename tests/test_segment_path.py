"""The one path from checked prompts to `Results` (`mobilesam.segment`), and the generator's own embeddings per crop."""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pytest

from images import generated_image, sample_images
from mobilesam import SAM, SamAutomaticMaskGenerator, SamPredictor
from mobilesam.prompts import make_prompt
from mobilesam.registry import build_from_config, get_config
from mobilesam.segment import segment_prompts
from reference import randomize
from tolerance import assert_close, assert_masks_agree, decoder_layers


@pytest.fixture(scope="module")
def predictor() -> SamPredictor:
    model = randomize(build_from_config(dataclasses.replace(get_config("vit_t"), image_size=256)), seed=11)
    return SamPredictor(model, backend="torch")


OBJECTS = (
    make_prompt([[120.0, 90.0]], [1]),
    make_prompt([[300.0, 200.0], [310.0, 150.0]], [1, 0], box=[250.0, 100.0, 400.0, 280.0]),
    make_prompt(box=[10.0, 20.0, 200.0, 250.0]),
    make_prompt([[60.0, 60.0]], [1]),
)


@pytest.mark.parametrize("multimask", [False, True])
def test_ragged_objects_give_each_objects_own_masks_in_order(predictor, multimask):
    image = sample_images()["coffee"]
    predictor.set_image(image)
    results = segment_prompts(predictor, predictor.embedding, OBJECTS, image, multimask_output=multimask, keep_logits=True)
    per_object = 3 if multimask else 1
    assert len(results) == len(OBJECTS) * per_object and results.orig_shape == image.shape[:2]
    layers = decoder_layers(predictor.model)
    for index, prompt in enumerate(OBJECTS):
        masks, scores, logits = predictor.predict(
            prompt.point_coords, prompt.point_labels, prompt.box, multimask_output=multimask, return_logits=True
        )
        rows = slice(index * per_object, (index + 1) * per_object)
        assert_close(results.scores[rows], scores, f"object {index} scores", layers)
        assert_close(results.low_res_logits[rows], logits, f"object {index} low-res logits", layers)
        assert_masks_agree(np.asarray(results.masks)[rows], masks > 0, masks, f"object {index} masks", layers)
    # Fewer points than the most are padded with SAM's "not a point"; no box is a NaN box.
    assert results.points.shape == (len(results), 2, 2)
    np.testing.assert_array_equal(results.labels[::per_object], [[1, -1], [1, 0], [-1, -1], [1, -1]])
    assert np.isnan(results.bboxes[0]).all() and np.array_equal(results.bboxes[per_object * 2], [10.0, 20.0, 200.0, 250.0])
    assert results.prompt(0) == {"points": [[120.0, 90.0]], "labels": [1]}


def test_logits_are_kept_only_when_asked(predictor):
    image = generated_image()
    results = segment_prompts(predictor, predictor.embed(image), OBJECTS[:1], image)
    assert results.low_res_logits is None


def test_no_objects_and_mixed_batches_say_what_is_wrong(predictor):
    image = generated_image()
    embedding = predictor.embed(image)
    with pytest.raises(ValueError, match="no objects to segment"):
        segment_prompts(predictor, embedding, [], image)
    with pytest.raises(ValueError, match="need prompts of one shape"):
        predictor.decode_prompts(embedding, OBJECTS[:2])


def test_the_api_takes_the_same_path():
    image = sample_images()["chelsea"]
    model = SAM("vit_t", backend="torch")
    got = model.predict(image, points=[[[120, 90]], [[60, 60]]], labels=[[1], [1]])[0]
    want = segment_prompts(model.predictor, model.predictor.embed(image), [OBJECTS[0], OBJECTS[3]], image)
    np.testing.assert_array_equal(np.asarray(got.masks), np.asarray(want.masks))
    np.testing.assert_array_equal(got.scores, want.scores)
    np.testing.assert_array_equal(got.points, want.points)


def test_the_generator_is_reentrant_across_threads(predictor):
    generator = SamAutomaticMaskGenerator(predictor.model, points_per_side=4, crop_n_layers=1, backend=predictor.backend)
    images = [generated_image(160, 200, seed=1), generated_image(120, 90, seed=2)]
    alone = [generator.generate(image) for image in images]
    together: list = [None, None]

    def run(index: int) -> None:
        together[index] = generator.generate(images[index])

    threads = [threading.Thread(target=run, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for want, got in zip(alone, together):
        assert len(got) == len(want)
        for a, b in zip(want, got):
            np.testing.assert_array_equal(a["segmentation"], b["segmentation"])
            assert a["predicted_iou"] == b["predicted_iou"] and a["crop_box"] == b["crop_box"]
