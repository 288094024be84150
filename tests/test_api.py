"""`SAM(...).predict(...)` called the way Ultralytics users call it, on a saved random checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from images import sample_images
from mobilesam import SAM, CheckpointError, SamAutomaticMaskGenerator, UnknownModelError, build_sam, load_sam
from mobilesam.backends import auto_backend_name
from mobilesam.weights import save_checkpoint
from reference import randomize


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "mobile_sam_random.pt"
    save_checkpoint(randomize(build_sam("vit_t"), seed=3), path)
    return path


@pytest.fixture(scope="module")
def model(checkpoint):
    # The reference numerics, so masks compare bit for bit with `SamPredictor`'s.
    return SAM(checkpoint, backend="torch")


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    path = tmp_path_factory.mktemp("images") / "coffee.jpg"
    Image.fromarray(sample_images()["coffee"]).save(path, quality=95)
    return path


def _check(results, n_masks: int, hw: tuple[int, int]) -> None:
    assert isinstance(results, list) and len(results) == 1
    result = results[0]
    assert result.masks.shape == (n_masks, *hw) and result.masks.dtype == np.bool_
    assert result.scores.shape == (n_masks,) and result.scores.dtype == np.float32
    assert result.boxes.shape == (n_masks, 4)
    assert result.orig_img.shape == (*hw, 3) and result.orig_img.dtype == np.uint8
    for mask, box in zip(result.masks, result.boxes):
        if mask.any():
            ys, xs = np.nonzero(mask)
            assert box.tolist() == [xs.min(), ys.min(), xs.max(), ys.max()]


def test_single_point(model, photo):
    results = model.predict(photo, points=[300, 200], labels=[1])
    _check(results, 1, (400, 600))
    assert results[0].path == str(photo)


def test_one_object_per_point_and_points_per_object(model, photo):
    _check(model.predict(photo, points=[[100, 200], [400, 250]], labels=[1, 1]), 2, (400, 600))
    _check(model.predict(photo, points=[[[100, 200], [400, 250]]], labels=[[1, 0]]), 1, (400, 600))


def test_boxes(model, photo):
    _check(model.predict(str(photo), bboxes=[50, 60, 300, 350]), 1, (400, 600))
    _check(model.predict(photo, bboxes=[[50, 60, 300, 350], [200, 10, 590, 390]]), 2, (400, 600))


def test_points_with_a_box_and_multimask(model, photo):
    _check(model.predict(photo, points=[[[120, 200]]], labels=[[1]], bboxes=[50, 60, 300, 350]), 1, (400, 600))
    _check(model.predict(photo, points=[300, 200], multimask_output=True), 3, (400, 600))


def test_box_prompt_equals_predictor_on_same_image(model, photo):
    from mobilesam import SamPredictor
    from mobilesam.io import load_image

    results = model.predict(photo, bboxes=[50, 60, 300, 350])
    predictor = SamPredictor(model.model, backend="torch")
    predictor.set_image(load_image(photo))
    masks, scores, _ = predictor.predict(box=np.array([50, 60, 300, 350]), multimask_output=False)
    assert np.array_equal(results[0].masks, masks)
    assert np.allclose(results[0].scores, scores, atol=1e-6)


def test_no_prompt_segments_everything(model, photo):
    options = dict(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0)
    results = model.predict(photo, **options)
    records = SamAutomaticMaskGenerator(model.model, backend="torch", **options).generate(np.asarray(Image.open(photo)))
    _check(results, len(records), (400, 600))
    assert len(records) > 0
    assert np.array_equal(results[0].masks, np.stack([r["segmentation"] for r in records]))
    np.testing.assert_array_equal(results[0].scores, np.array([r["predicted_iou"] for r in records], np.float32))
    with pytest.raises(TypeError, match="apply only to segment everything"):
        model.predict(photo, points=[300, 200], labels=[1], points_per_side=4)


def test_sources_pil_numpy_bgr_and_list(model):
    image = sample_images()["chelsea"]
    from_array = model.predict(image, points=[200, 150])[0]
    from_pil = model.predict(Image.fromarray(image), points=[200, 150])[0]
    from_bgr = model.predict(np.ascontiguousarray(image[:, :, ::-1]), points=[200, 150], image_format="BGR")[0]
    assert np.array_equal(from_array.masks, from_pil.masks) and np.array_equal(from_array.masks, from_bgr.masks)
    assert len(model.predict([image, image], points=[200, 150])) == 2


def test_grayscale_rgba_16bit_and_float_images_are_converted(model):
    image = sample_images()["generated"]
    gray = image.mean(axis=2).astype(np.uint8)
    rgba = np.concatenate([image, np.full((*image.shape[:2], 1), 255, np.uint8)], axis=2)
    for variant in (gray, rgba, image.astype(np.uint16) * 257, image.astype(np.float32) / 255):
        _check(model.predict(variant, points=[200, 60]), 1, image.shape[:2])
    assert np.array_equal(model.predict(rgba, points=[200, 60])[0].masks, model.predict(image, points=[200, 60])[0].masks)


def test_same_image_reuses_the_embedding(model, monkeypatch):
    image = sample_images()["generated"]
    calls = []
    encoder = model.model.image_encoder
    compute = encoder.forward
    monkeypatch.setattr(encoder, "forward", lambda *a, **k: (calls.append(1), compute(*a, **k))[1])
    model.predict(image, points=[10, 10])
    calls.clear()
    model.predict(image.copy(), points=[200, 60])
    assert calls == []
    changed = image.copy()
    changed[0, 0, 0] ^= 1
    model.predict(changed, points=[200, 60])
    assert calls == [1]


def test_plot_save_and_json(model, photo, tmp_path):
    result = model.predict(photo, points=[[300, 200], [100, 100]], labels=[1, 1])[0]
    overlay = result.plot()
    assert overlay.shape == (400, 600, 3) and overlay.dtype == np.uint8
    assert not np.array_equal(overlay, result.orig_img)
    out = result.save(tmp_path / "overlay.png")
    assert Image.open(out).size == (600, 400)
    assert [p.name for p in tmp_path.iterdir()] == ["overlay.png"]
    payload = json.loads(result.to_json())
    assert (payload["height"], payload["width"]) == (400, 600)
    for record, mask in zip(payload["masks"], result.masks):
        rle = dict(record["segmentation"], counts=record["segmentation"]["counts"].encode())
        assert np.array_equal(mask_utils.decode(rle).astype(bool), mask)
        assert record["area"] == int(mask.sum())


def test_info_counts_parameters(model, capsys):
    counts = model.info()
    assert counts["total"] == counts["image_encoder"] + counts["prompt_encoder"] + counts["mask_decoder"]
    printed = capsys.readouterr().out
    assert "parameters" in printed and "backend torch (fp32): the model's own modules" in printed


def test_the_default_backend_is_this_machines_auto_choice_and_says_so(checkpoint, photo, model, capsys):
    chosen = SAM(checkpoint)
    assert chosen.backend.name == auto_backend_name()
    chosen.info()
    assert f"backend {chosen.backend.spec.label}:" in capsys.readouterr().out
    with pytest.raises(ValueError, match="unknown backend 'tensorrt'"):
        SAM(checkpoint, backend="tensorrt")


def test_model_name_gives_random_weights_and_unknown_name_fails():
    torch.manual_seed(123)
    drawn_after = torch.rand(3)
    torch.manual_seed(123)
    first = SAM("vit_t", backend="torch").model
    # Seeded on its own generator: the caller's random stream is untouched...
    assert torch.equal(torch.rand(3), drawn_after)
    assert first.image_encoder.img_size == 1024
    # ...and every process builds the same random model (reruns, Ray actors, a store's next session).
    again = load_sam("vit_t")
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values()))
    with pytest.raises(UnknownModelError, match="unknown model"):
        SAM("vit_q")


def test_wrong_checkpoint_is_a_clear_error(tmp_path):
    text_file = tmp_path / "notes.pt"
    text_file.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="notes.pt"):
        SAM(text_file)


BAD_PROMPTS = [
    (dict(points=[[100, 200], [300, 200]], labels=[1]), "labels must match points"),
    (dict(points=[100, 200], labels=[2]), "1 \\(foreground\\) or 0 \\(background\\)"),
    (dict(points=[float("nan"), 200]), "NaN"),
    (dict(bboxes=[10, 10, float("inf"), 50]), "NaN or infinite"),
    (dict(points=[5000, 200]), "far outside"),
    (dict(bboxes=[300, 10, 100, 50]), "x1 <= x2"),
    (dict(points=[]), "points is empty"),
    (dict(bboxes=[]), "bboxes is empty"),
    (dict(points=[1, 2, 3]), "points must be"),
    (dict(bboxes=[1, 2, 3]), "box must be"),
    (dict(labels=[1]), "labels were given without points"),
    (dict(points=[[[1, 2]], [[3, 4]]], bboxes=[1, 2, 30, 40]), "one box per object"),
    (dict(multimask_output=True), "multimask_output applies to prompts"),
]


@pytest.mark.parametrize(("prompt", "message"), BAD_PROMPTS)
def test_bad_prompts_raise_value_error(model, prompt, message):
    with pytest.raises(ValueError, match=message):
        model.predict(sample_images()["generated"], **prompt)


def test_prompts_are_checked_once_before_any_image_is_read(model, tmp_path):
    with pytest.raises(ValueError, match=r"1 \(foreground\) or 0 \(background\), got \[2\]"):
        model.predict([tmp_path / "missing.jpg", tmp_path / "missing.jpg"], points=[[1, 1], [2, 2]], labels=[1, 2])
    # Whether a prompt fits its image is checked per image, once it is read.
    with pytest.raises(ValueError, match="lies far outside the 64x48 image"):
        model.predict([np.zeros((48, 64, 3), np.uint8)], points=[500, 10])


def test_bad_images_raise_clear_errors(model, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        model.predict(tmp_path / "missing.jpg", points=[1, 1])
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 definitely not a jpeg")
    with pytest.raises(ValueError, match="broken.jpg"):
        model.predict(broken, points=[1, 1])
    with pytest.raises(ValueError, match="shape"):
        model.predict(np.zeros((2, 4, 4, 3), np.uint8), points=[1, 1])
    with pytest.raises(ValueError, match="NaN"):
        model.predict(np.full((8, 8, 3), np.nan, np.float32), points=[1, 1])
    with pytest.raises(TypeError, match="expected an image"):
        model.predict(12345, points=[1, 1])


def test_package_names_load_on_first_use():
    script = """
import sys
import mobilesam
assert "torch" not in sys.modules, "import mobilesam alone must stay light"
for name in mobilesam.__all__:
    getattr(mobilesam, name)
assert set(mobilesam.__all__) <= set(dir(mobilesam))
try:
    mobilesam.NoSuchThing
except AttributeError as err:
    print(err)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "module 'mobilesam' has no attribute 'NoSuchThing'"
