"""`mobilesam export` and the onnxruntime backend against our torch model at random weights.

Parity runs on vit_t built for 256x256 inputs (the same graph, 16x cheaper;
every stage still pads its windows), exported once per session; the
command-line export of the real 1024 model is one slow test.
"""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from images import sample_images
from mobilesam import ImageEmbedding, OnnxPredictor, SamAutomaticMaskGenerator, SamPredictor, build_sam
from mobilesam.backends import GraphBackend, make_backend
from mobilesam.cli import app
from mobilesam.export import export_onnx
from mobilesam.registry import build_from_config, get_config
from mobilesam.weights import save_checkpoint, sha256_file
from reference import randomize

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

FP32_TOL = 1e-4
# Dynamic int8 (MatMul/Gemm weights) at random weights: masks agree with fp32 on 98-99% of pixels
# (seeded runs); random weights amplify quantisation error, so the bound leaves room.
INT8_MASK_AGREEMENT = 0.95


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """(model, checkpoint, export folder): random weights of a 256x256 vit_t, exported with int8."""
    root = tmp_path_factory.mktemp("export")
    model = randomize(build_from_config(dataclasses.replace(get_config("vit_t"), image_size=256)), seed=5)
    checkpoint = save_checkpoint(model, root / "random_vit_t_256.pt")
    export_onnx(model, root / "onnx", model_name="vit_t", weights=checkpoint, quantize="int8")
    return model, checkpoint, root / "onnx"


@pytest.fixture(scope="module")
def torch_predictor(exported):
    model = exported[0]
    predictor = SamPredictor(model, backend="torch")
    predictor.set_image(sample_images()["coffee"])
    return predictor


def _onnx_predictor(exported, torch_predictor, name: str = "onnx") -> SamPredictor:
    """A predictor on the onnx backend holding the torch embedding, so decoder tests skip the encoder."""
    model, _, folder = exported
    predictor = SamPredictor(model, make_backend(name, model, onnx_dir=folder, threads=2))
    predictor.set_embedding(torch_predictor.embedding)
    return predictor


def test_export_writes_checked_graphs_and_a_sidecar(exported):
    model, checkpoint, folder = exported
    assert not any(m.training for m in model.modules()), "export must leave the model in eval mode"
    metadata = json.loads((folder / "metadata.json").read_text())
    assert metadata["model"] == "vit_t"
    assert metadata["weights"] == {"file": checkpoint.name, "sha256": sha256_file(checkpoint)}
    assert metadata["opset"] == 17 and metadata["quantize"] == ["int8"] and metadata["image_size"] == 256
    assert metadata["preprocessing"] == {
        "pixel_mean": model.pixel_mean.flatten().tolist(),
        "pixel_std": model.pixel_std.flatten().tolist(),
        "image_format": "RGB",
        "mask_threshold": 0.0,
    }
    for role, entry in metadata["files"].items():
        path = folder / entry["file"]
        assert sha256_file(path) == entry["sha256"], role
        onnx.checker.check_model(str(path))
    assert sorted(p.name for p in folder.iterdir()) == ["decoder.onnx", "encoder.int8.onnx", "encoder.onnx", "metadata.json"]


def test_onnx_encoder_matches_torch(exported, torch_predictor):
    model, _, folder = exported
    predictor = SamPredictor(model, GraphBackend.from_export(folder, "onnx", model, threads=2))
    predictor.set_image(sample_images()["coffee"])
    assert predictor.input_size == torch_predictor.input_size
    assert (predictor.features - torch_predictor.features).abs().max().item() <= FP32_TOL


def test_int8_masks_agree_with_fp32(exported, torch_predictor):
    model, _, folder = exported
    predictor = SamPredictor(model, GraphBackend.from_export(folder, "onnx-int8", model, threads=2))
    image = sample_images()["coffee"]
    predictor.set_image(image)
    h, w = image.shape[:2]
    agree = total = 0
    for point in ([0.5 * w, 0.5 * h], [0.25 * w, 0.3 * h], [0.7 * w, 0.6 * h]):
        prompt = dict(point_coords=np.array([point]), point_labels=np.array([1]))
        ours, want = predictor.predict(**prompt)[0], torch_predictor.predict(**prompt)[0]
        agree, total = agree + int((ours == want).sum()), total + ours.size
    assert agree / total >= INT8_MASK_AGREEMENT


def _prompts(h: int, w: int) -> dict[str, dict]:
    box = np.array([0.1 * w, 0.2 * h, 0.8 * w, 0.9 * h])
    return {
        "point": dict(point_coords=np.array([[0.5 * w, 0.4 * h]]), point_labels=np.array([1])),
        "points": dict(
            point_coords=np.array([[0.3 * w, 0.3 * h], [0.6 * w, 0.7 * h], [10.0, 5.0]]), point_labels=np.array([1, 0, 1])
        ),
        "box": dict(box=box),
        "point_and_box": dict(point_coords=np.array([[0.4 * w, 0.5 * h]]), point_labels=np.array([0]), box=box),
    }


def _assert_close(ours: tuple, want: tuple, what: str) -> None:
    assert ours[0].shape == want[0].shape and ours[0].dtype == want[0].dtype, what
    assert np.abs(ours[2] - want[2]).max() <= FP32_TOL, f"{what}: low-res logits"
    assert np.abs(ours[1] - want[1]).max() <= FP32_TOL, f"{what}: iou"
    if ours[0].dtype == np.bool_:
        # A pixel whose logit is within float error of the threshold may flip.
        assert np.mean(ours[0] != want[0]) <= 1e-4, f"{what}: masks"
    else:
        assert np.abs(ours[0] - want[0]).max() <= FP32_TOL, f"{what}: mask logits"


def test_onnx_decoder_predicts_like_torch(exported, torch_predictor):
    predictor = _onnx_predictor(exported, torch_predictor)
    prompts = _prompts(*torch_predictor.original_size)
    # A subset covering points, padding, boxes, mask input and both outputs; all of them run on torch.
    cases = [
        ("point", dict(multimask_output=True)),
        ("point", dict(multimask_output=False)),
        ("points", dict(multimask_output=True)),
        ("box", dict(multimask_output=False, return_logits=True)),
        ("point_and_box", dict(multimask_output=True)),
    ]
    for case, options in cases:
        _assert_close(
            predictor.predict(**prompts[case], **options),
            torch_predictor.predict(**prompts[case], **options),
            f"{case}/{options}",
        )
    logits = torch_predictor.predict(**prompts["point"], return_logits=True)
    best = logits[2][np.argmax(logits[1])][None]
    _assert_close(
        predictor.predict(**prompts["point_and_box"], mask_input=best, multimask_output=False),
        torch_predictor.predict(**prompts["point_and_box"], mask_input=best, multimask_output=False),
        "point_and_box/mask_input",
    )


def test_onnx_decoder_takes_a_batch_of_boxes(exported, torch_predictor):
    predictor = _onnx_predictor(exported, torch_predictor)
    boxes = torch.tensor([[10.0, 20.0, 200.0, 250.0], [150.0, 30.0, 440.0, 290.0], [0.0, 0.0, 599.0, 399.0]])
    boxes = predictor.transform.apply_boxes_torch(boxes, predictor.original_size)
    for multimask in (True, False):
        ours = predictor.predict_torch(None, None, boxes=boxes, multimask_output=multimask)
        want = torch_predictor.predict_torch(None, None, boxes=boxes, multimask_output=multimask)
        assert ours[0].shape == (3, 3 if multimask else 1, *predictor.original_size)
        _assert_close(tuple(t.numpy() for t in ours), tuple(t.numpy() for t in want), f"boxes multimask={multimask}")


def test_segment_everything_decodes_on_the_onnx_backend(exported, torch_predictor):
    # The generator hands its batches to the backend: onnxruntime decodes them,
    # the torch decoder is never asked, and the masks are torch's up to fp32 rounding.
    model, _, folder = exported
    backend = make_backend("onnx", model, onnx_dir=folder, threads=2)
    runs = []
    run = backend.sessions.decoder.run
    backend.sessions.decoder.run = lambda *args, **kwargs: runs.append(1) or run(*args, **kwargs)
    options = dict(points_per_side=4, pred_iou_thresh=0.5, stability_score_thresh=0.2, box_nms_thresh=1.0)
    image, embedding = sample_images()["coffee"], torch_predictor.embedding
    on_torch = SamAutomaticMaskGenerator(model, backend="torch", **options).generate(image, embedding=embedding)
    on_onnx = SamAutomaticMaskGenerator(model, backend=backend, **options).generate(image, embedding=embedding)
    assert len(runs) == 1 and len(on_onnx) == len(on_torch) > 0
    for ours, theirs in zip(on_onnx, on_torch):
        union = np.logical_or(ours["segmentation"], theirs["segmentation"]).sum()
        assert np.logical_and(ours["segmentation"], theirs["segmentation"]).sum() / union >= 0.99
        assert abs(ours["predicted_iou"] - theirs["predicted_iou"]) <= FP32_TOL


def test_image_batches_predict_on_the_onnx_backend(exported):
    model, _, folder = exported
    predictor = SamPredictor(model, make_backend("onnx", model, onnx_dir=folder, threads=2))
    images = [sample_images()["chelsea"], sample_images()["generated"]]
    predictor.set_image_batch(images)
    boxes = np.array([[10.0, 20.0, 200.0, 250.0], [150.0, 30.0, 440.0, 290.0]])
    masks, scores, _ = predictor.predict_batch(
        [None, np.array([[60.0, 50.0]])], [None, np.array([1])], box_batch=[boxes, None], multimask_output=False
    )
    assert masks[0].shape == (2, 1, 300, 451) and masks[1].shape == (1, 123, 457)
    single = SamPredictor(model, predictor.backend)
    single.set_image(images[1])
    expected = single.predict(np.array([[60.0, 50.0]]), np.array([1]), multimask_output=False)
    np.testing.assert_array_equal(masks[1], expected[0])
    np.testing.assert_array_equal(scores[1], expected[1])


def test_decoder_graph_upscales_to_orig_im_size(exported, torch_predictor):
    """The graph's own `masks` output, for clients that use it directly as with SAM's ONNX decoder."""
    import onnxruntime as ort

    model, _, folder = exported
    session = ort.InferenceSession(str(folder / "decoder.onnx"), providers=["CPUExecutionProvider"])
    h, w = torch_predictor.original_size
    coords = torch_predictor.transform.apply_coords(np.array([[[0.5 * w, 0.4 * h], [0.0, 0.0]]]), (h, w))
    masks, iou, low_res = session.run(
        None,
        {
            "image_embeddings": torch_predictor.features.numpy(),
            "point_coords": coords.astype(np.float32),
            "point_labels": np.array([[1.0, -1.0]], np.float32),
            "mask_input": np.zeros((1, 1, 64, 64), np.float32),
            "has_mask_input": np.zeros(1, np.float32),
            "orig_im_size": np.array([h, w], np.float32),
        },
    )
    assert masks.shape == (1, 4, h, w) and iou.shape == (1, 4) and low_res.shape == (1, 4, 64, 64)
    want = model.postprocess_masks(torch.from_numpy(low_res), torch_predictor.input_size, (h, w))
    # onnxruntime's Resize weighs bilinear neighbours in another order than torch: ~1e-5 relative.
    assert np.abs(masks - want.numpy()).max() <= 1e-3


def test_onnx_backend_errors_are_clear(exported, tmp_path, torch_predictor):
    model, _, folder = exported
    with pytest.raises(FileNotFoundError, match="not a `mobilesam export` folder"):
        make_backend("onnx", model, onnx_dir=tmp_path)
    predictor = _onnx_predictor(exported, torch_predictor)
    with pytest.raises(ValueError, match="needs a point or a box prompt"):
        predictor.predict(mask_input=np.zeros((1, 64, 64), np.float32))


def test_onnx_predictor_predicts_like_sam_predictor(exported, torch_predictor):
    folder = exported[2]
    predictor = OnnxPredictor(folder, threads=2)
    predictor.set_image(sample_images()["coffee"])
    assert (predictor.original_size, predictor.input_size) == (torch_predictor.original_size, torch_predictor.input_size)
    assert np.abs(predictor.features - torch_predictor.features.numpy()).max() <= FP32_TOL
    # On the torch embedding, so the decoder graph and the upscaling are compared alone.
    predictor.set_embedding(
        ImageEmbedding(torch_predictor.features.numpy(), torch_predictor.original_size, torch_predictor.input_size)
    )
    prompts = _prompts(*torch_predictor.original_size)
    for case, options in [
        ("point", dict(multimask_output=True)),
        ("points", dict(multimask_output=False)),
        ("box", dict(multimask_output=False, return_logits=True)),
        ("point_and_box", dict(multimask_output=True)),
    ]:
        ours, want = predictor.predict(**prompts[case], **options), torch_predictor.predict(**prompts[case], **options)
        # The graph upscales with onnxruntime's Resize, which sums bilinear neighbours in another order.
        if ours[0].dtype == np.bool_:
            assert ours[0].shape == want[0].shape and np.mean(ours[0] != want[0]) <= 1e-4, case
        else:
            assert np.abs(ours[0] - want[0]).max() <= 1e-3, case
        assert np.abs(ours[1] - want[1]).max() <= FP32_TOL and np.abs(ours[2] - want[2]).max() <= FP32_TOL, case


def test_onnx_predictor_runs_without_torch(exported):
    script = f"""
import sys
import numpy as np
from mobilesam import OnnxPredictor
predictor = OnnxPredictor({str(exported[2])!r}, backend="onnx-int8", threads=1)
predictor.set_image(np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8))
masks, iou, low_res = predictor.predict(point_coords=np.array([[60, 40]]), point_labels=np.array([1]))
assert masks.shape == (3, 90, 120) and masks.dtype == np.bool_ and iou.shape == (3,) and low_res.shape == (3, 64, 64)
print(sorted(name for name in sys.modules if name.split(".")[0] == "torch"))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", "torch was imported"


def test_onnx_predictor_errors_are_clear(exported, tmp_path):
    folder = exported[2]
    predictor = OnnxPredictor(folder, threads=1)
    with pytest.raises(RuntimeError, match="no image is set"):
        predictor.predict(point_coords=np.array([[1, 1]]), point_labels=np.array([1]))
    predictor.set_image(sample_images()["coffee"])
    with pytest.raises(ValueError, match="needs a point or a box prompt"):
        predictor.predict(mask_input=np.zeros((1, 64, 64), np.float32))
    with pytest.raises(ValueError, match="expected 2 point labels, one per point"):
        predictor.predict(point_coords=np.array([[1, 1], [2, 2]]), point_labels=np.array([1]))
    with pytest.raises(FileNotFoundError, match="not a `mobilesam export` folder"):
        OnnxPredictor(tmp_path / "missing")
    old = tmp_path / "old"
    shutil.copytree(folder, old)
    (old / "encoder.int8.onnx").unlink()
    with pytest.raises(FileNotFoundError, match="export with `--quantize int8`"):
        OnnxPredictor(old, backend="onnx-int8")
    metadata = json.loads((old / "metadata.json").read_text())
    del metadata["preprocessing"]
    (old / "metadata.json").write_text(json.dumps(metadata))
    with pytest.raises(ValueError, match="lacks the pre-processing constants"):
        OnnxPredictor(old)
    (old / "metadata.json").write_text('{"model": ')
    with pytest.raises(ValueError, match="not valid JSON"):
        OnnxPredictor(old)


def test_export_cli_rejects_an_unknown_quantisation(tmp_path):
    result = CliRunner().invoke(app, ["export", "-m", "vit_t", "-o", str(tmp_path), "--quantize", "int4"])
    assert result.exit_code == 2
    assert "--quantize for --format onnx is one of int8, int8-static, got 'int4'" in result.output
    assert not any(tmp_path.iterdir())
    result = CliRunner().invoke(app, ["export", "-m", "vit_t", "-f", "coreml", "-o", str(tmp_path), "--quantize", "int8"])
    assert result.exit_code == 2 and "--quantize for --format coreml is not taken" in result.output
    result = CliRunner().invoke(app, ["export", "-m", "vit_t", "-f", "executorch", "-o", str(tmp_path), "--opset", "18"])
    assert result.exit_code == 2 and "--opset is for the ONNX formats, not executorch" in result.output


@pytest.mark.slow
def test_export_cli_writes_the_1024_model_with_its_checksum(tmp_path):
    model = randomize(build_sam("vit_t"), seed=6)
    checkpoint = save_checkpoint(model, tmp_path / "random_vit_t.pt")
    result = CliRunner().invoke(app, ["export", "-m", str(checkpoint), "-o", str(tmp_path / "onnx")])
    assert result.exit_code == 0, result.output
    metadata = json.loads((tmp_path / "onnx" / "metadata.json").read_text())
    assert metadata["weights"]["sha256"] == sha256_file(checkpoint) and metadata["image_size"] == 1024
    assert metadata["quantize"] == [] and sorted(metadata["files"]) == ["decoder", "encoder"]
    onnx.checker.check_model(str(tmp_path / "onnx" / "encoder.onnx"))


def test_the_service_runs_on_the_onnx_backend(exported):
    # Every backend serves every command: uploads, clicks and segment-everything on onnxruntime.
    from fastapi.testclient import TestClient

    from mobilesam.server import ServeSettings, create_app

    model, _, folder = exported
    backend = make_backend("onnx", model, onnx_dir=folder, threads=2)
    image = sample_images()["chelsea"]
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    with TestClient(create_app(model, ServeSettings(), backend)) as client:
        uploaded = client.post("/v1/images", files={"file": ("chelsea.png", buffer.getvalue(), "image/png")})
        image_id = uploaded.json()["image_id"]
        clicked = client.post(f"/v1/images/{image_id}/segment", json={"points": [[200, 150]], "multimask": False})
        everything = client.post(
            f"/v1/images/{image_id}/everything",
            json={"points_per_side": 2, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0},
        )
    assert uploaded.status_code == clicked.status_code == everything.status_code == 200
    predictor = SamPredictor(model, backend)
    predictor.set_image(image)
    masks, scores, _ = predictor.predict(np.array([[200, 150]]), np.array([1]), multimask_output=False)
    assert clicked.json()["masks"][0]["score"] == pytest.approx(float(scores[0]), abs=1e-6)
    assert clicked.json()["masks"][0]["area"] == int(masks[0].sum())
    assert len(everything.json()["masks"]) > 0
