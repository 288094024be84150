"""The default call gives the reference's masks; reduced precision comes only when asked for.

`SAM(checkpoint).predict(...)` runs `backend="auto"`, whatever engine that is
on this CPU, and is compared with the original `mobile_sam.SamPredictor` at
the same weights (vit_t at its real 1024 input, seeded random weights) on
the test photos: every mask within IoU 0.999 of the reference's
(`fidelity.FAITHFUL`).
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
import torch

from images import sample_images
from mobilesam import SAM, SamAutomaticMaskGenerator, SamPredictor
from mobilesam.backends import BACKEND_SPECS, auto_backend_name, make_backend
from mobilesam.backends.auto import reduced_precision_backend
from mobilesam.bench import engine_agreement
from mobilesam.fidelity import FAITHFUL, Agreement, compare_masks
from mobilesam.registry import build_from_config, get_config
from mobilesam.weights import save_checkpoint
from reference import mobile_sam, paired_models, randomize

PHOTOS = ("astronaut", "coffee", "chelsea")


@pytest.fixture(scope="module")
def pair():
    return paired_models("vit_t", seed=4)


@pytest.fixture(scope="module")
def checkpoint(pair, tmp_path_factory):
    return save_checkpoint(pair[0], tmp_path_factory.mktemp("weights") / "mobile_sam.pt")


@pytest.fixture(scope="module")
def default_model(checkpoint):
    return SAM(checkpoint)


def _small_model(seed: int, image_size: int = 256):
    return randomize(build_from_config(dataclasses.replace(get_config("vit_t"), image_size=image_size)), seed=seed)


def _prompts(h: int, w: int) -> dict[str, dict]:
    """What `SAM.predict` takes, per kind of prompt, spread over an (h, w) photo."""
    return {
        "point": dict(points=[0.5 * w, 0.45 * h], labels=[1]),
        "multi-point": dict(points=[[[0.3 * w, 0.4 * h], [0.6 * w, 0.6 * h], [0.5 * w, 0.2 * h]]], labels=[[1, 1, 0]]),
        "box": dict(bboxes=[0.2 * w, 0.25 * h, 0.7 * w, 0.8 * h]),
        "several boxes": dict(bboxes=[[0.1 * w, 0.1 * h, 0.5 * w, 0.6 * h], [0.4 * w, 0.3 * h, 0.9 * w, 0.9 * h]]),
    }


def _reference_masks(predictor, image: np.ndarray, prompt: dict) -> np.ndarray:
    """(objects, H, W) masks of the original predictor for one `SAM.predict` prompt, one mask per object."""
    if "bboxes" in prompt:
        boxes = np.array(prompt["bboxes"], dtype=np.float64).reshape(-1, 4)
        boxes_torch = predictor.transform.apply_boxes_torch(torch.as_tensor(boxes, dtype=torch.float), image.shape[:2])
        masks, _, _ = predictor.predict_torch(None, None, boxes_torch, multimask_output=False)
        return masks[:, 0].numpy()
    coords = np.array(prompt["points"], dtype=np.float64).reshape(-1, 2)
    labels = np.array(prompt["labels"]).reshape(-1)
    return predictor.predict(point_coords=coords, point_labels=labels, multimask_output=False)[0]


def test_the_default_predict_gives_the_reference_masks(pair, default_model):
    reference = mobile_sam.SamPredictor(pair[1])
    spec = default_model.backend.spec
    for name in PHOTOS:
        image = sample_images()[name]
        reference.set_image(image)
        for kind, prompt in _prompts(*image.shape[:2]).items():
            want = _reference_masks(reference, image, prompt)
            [result] = default_model.predict(image, **prompt)
            agreement = compare_masks(list(want), list(np.asarray(result.masks)))
            assert agreement.meets(FAITHFUL), f"{spec.label} on {name}, {kind}: {agreement}"


def test_the_drop_ins_default_to_the_same_faithful_engine(pair, default_model):
    ours = pair[0]
    assert SamPredictor(ours).backend.name == default_model.backend.name == auto_backend_name()
    generator = SamAutomaticMaskGenerator(ours, points_per_side=4)
    assert generator.predictor.backend.name == auto_backend_name()
    assert SamPredictor(ours, backend="torch").backend.spec.reference_numerics


def test_the_torch_backend_keeps_the_reference_bits(pair):
    ours, reference = pair
    image = sample_images()["coffee"]
    exact, original = SamPredictor(ours, backend="torch"), mobile_sam.SamPredictor(reference)
    exact.set_image(image)
    original.set_image(image)
    prompt = dict(point_coords=np.array([[300.0, 200.0]]), point_labels=np.array([1]))
    assert torch.equal(exact.features, original.features)
    for got, want in zip(exact.predict(**prompt), original.predict(**prompt)):
        np.testing.assert_array_equal(got, want)


def test_an_engine_made_from_a_name_follows_new_weights():
    ours, other = _small_model(seed=5), _small_model(seed=6)
    image = sample_images()["chelsea"]
    predictor = SamPredictor(ours, backend="torch-fast")
    before = predictor.embed(image).features
    with torch.no_grad():
        ours.load_state_dict(other.state_dict())
    after = predictor.embed(image).features
    expected = SamPredictor(other, backend="torch").embed(image).features
    assert (after - expected).abs().max().item() < 1e-4 < (before - expected).abs().max().item()


def test_half_runs_reduced_precision_where_measured_and_says_so(checkpoint, default_model, capsys):
    reduced = reduced_precision_backend()
    if reduced is None:
        with pytest.warns(RuntimeWarning, match="half=True: no bf16 or int8 engine"):
            model = SAM(checkpoint, half=True)
        assert model.backend.name == default_model.backend.name
    else:
        model = SAM(checkpoint, half=True)
        assert model.backend.name == reduced and model.backend.spec.precision in ("bf16", "int8")
    model.info()
    assert f"backend {model.backend.spec.label}:" in capsys.readouterr().out
    # predict(half=...) switches the same way, and back.
    image = sample_images()["coffee"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        default_model.predict(image, points=[300, 200], half=True)
    assert default_model.backend.name == model.backend.name
    default_model.predict(image, points=[300, 200], half=False)
    assert default_model.backend.name == auto_backend_name()
    with pytest.raises(ValueError, match="half=True asks for reduced precision, but backend 'torch' computes fp32"):
        SAM(checkpoint, backend="torch", half=True)


def test_the_protocol_catches_a_flipped_mask_and_counts_every_pixel():
    mask = np.zeros((40, 50), bool)
    mask[10:30, 10:40] = True
    shifted = np.roll(mask, 1, axis=1)
    same = compare_masks([mask, mask], [mask, mask.copy()])
    assert same == Agreement(1.0, 1.0) and same.meets(FAITHFUL)
    moved = compare_masks([mask, mask], [mask, shifted])
    assert moved.pixels_equal == 1 - 40 / (2 * 40 * 50) and moved.min_iou == 580 / 620
    assert not moved.meets(FAITHFUL)
    assert compare_masks([np.zeros((4, 4), bool)], [np.zeros((4, 4), bool)]).min_iou == 1.0


@pytest.mark.slow
def test_every_fp32_engine_meets_the_faithful_bar_by_the_protocol():
    ours = _small_model(seed=0, image_size=512)
    images = {name: sample_images()[name] for name in PHOTOS}
    for name, spec in BACKEND_SPECS.items():
        if spec.precision == "fp32" and spec.quick_start:
            agreement = engine_agreement(ours, make_backend(name, ours, threads=2), images)
            assert agreement.meets(FAITHFUL), f"{name}: {agreement}"
