"""The executorch export and runtime against eager torch, on a seeded random, shallow vit_t built for 256x256 inputs.

One export per module (`export_model(format="executorch", quantize="int8")`),
read back through `OnnxPredictor` (the executorch runtime) and ExecuTorch's own
`Runtime`. Lowering to XNNPACK costs time per graph node (50 to 130 s for each
graph of the full vit_t on 2 shared cores), so the model has one TinyViT block per stage and
one two-way transformer layer: every kind of layer and every padded window is
still there. Even so the four lowerings take minutes, so the module is slow.
"""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch
from exports import agreement_with_torch

from mobilesam import OnnxPredictor, SamPredictor
from mobilesam.export.formats import export_model
from mobilesam.export.mobile import LowResDecoder
from mobilesam.export.wrappers import SamOnnxModel
from mobilesam.fidelity import compare_masks, demo_image, demo_prompts
from mobilesam.registry import build_from_config, get_config
from mobilesam.runtime.executorch import ExecuTorchSessions
from mobilesam.runtime.runtimes import open_export
from mobilesam.runtime.sessions import onnx_points
from mobilesam.weights import save_checkpoint, sha256_file
from reference import randomize

# The package only: importing its runtime costs seconds, which collecting a deselected module should not.
pytest.importorskip("executorch")

pytestmark = pytest.mark.slow

# fp32 XNNPACK programs: the embedding and low-res logits are eager torch's to float rounding.
FP32_TOL = 1e-4
# Static int8 (convolutions and linear layers) at random weights: masks agree with fp32 torch on 98.3% of the demo
# image's pixels here (min IoU 0.97); 99.2% for the full vit_t at 1024.
INT8_PIXELS_EQUAL = 0.95


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(model, checkpoint, folder): random weights of a shallow 256x256 vit_t, exported as executorch with an int8 encoder."""
    root = tmp_path_factory.mktemp("executorch")
    config = get_config("vit_t")
    shallow = dataclasses.replace(
        config, image_size=256, encoder=dataclasses.replace(config.encoder, depths=(1, 1, 1, 1)), decoder_depth=1
    )
    model = randomize(build_from_config(shallow), seed=13)
    checkpoint = save_checkpoint(model, root / "random_vit_t_256.pt")
    paths = export_model(model, root / "et", format="executorch", model_name="vit_t", weights=checkpoint, quantize="int8")
    assert set(paths) == {"encoder", "decoder", "decoder_single", "encoder.int8", "metadata"}
    return model, checkpoint, root / "et"


@pytest.fixture(scope="module")
def expected(exported):
    """The torch SamPredictor holding the demo image."""
    predictor = SamPredictor(exported[0], backend="torch")
    predictor.set_image(demo_image())
    return predictor


@pytest.fixture(scope="module")
def measured(exported):
    """An OnnxPredictor over the folder (fp32 encoder) holding the demo image."""
    predictor = OnnxPredictor(exported[2], threads=2)
    predictor.set_image(demo_image())
    return predictor


def test_folder_holds_the_programs_and_a_sidecar(exported):
    model, checkpoint, folder = exported
    metadata = json.loads((folder / "metadata.json").read_text())
    assert metadata["format"] == "executorch" and metadata["model"] == "vit_t" and metadata["image_size"] == 256
    assert metadata["weights"] == {"file": checkpoint.name, "sha256": sha256_file(checkpoint)}
    assert metadata["executorch"].startswith("1.") and metadata["decoder_points"] == {"min": 1, "max": 16}
    graphs = metadata["graphs"]
    assert set(graphs) == {"encoder", "decoder", "decoder_single", "encoder.int8"}
    for role, entry in graphs.items():
        assert entry["sha256"] == sha256_file(folder / entry["file"]), role
    assert graphs["encoder"]["inputs"] == graphs["encoder.int8"]["inputs"] == ["image", "image_size"]
    assert graphs["encoder.int8"]["layout"] == "pixels" and graphs["decoder"]["batch"] == 1
    assert "encoder.int8" in metadata["quantize"]
    assert sorted(p.name for p in folder.iterdir()) == [
        "decoder.pte", "decoder_single.pte", "encoder.int8.pte", "encoder.pte", "metadata.json"
    ]  # fmt: skip


def test_masks_and_embedding_match_torch(expected, measured):
    assert isinstance(measured.sessions, ExecuTorchSessions)
    assert np.abs(measured.features - expected.features.numpy()).max() <= FP32_TOL
    agreement = agreement_with_torch(expected, measured, FP32_TOL)
    assert agreement.min_iou >= 0.999, agreement


def test_decoder_takes_any_number_of_points_up_to_its_bound(expected, measured):
    # One program for every N: 1 point (no padding), 7 clicks with SAM's padding point, then one too many.
    rng = np.random.default_rng(0)
    for count in (1, 8):
        coords = rng.uniform(0, 256, (1, count, 2))
        labels = rng.integers(0, 2, (1, count)).astype(np.float32)
        low_res = measured.sessions.decode(measured.features, coords, labels, None, (192, 256), ("low_res_masks",))[0]
        with torch.inference_mode():
            _, want = LowResDecoder(expected.model)(
                expected.features, torch.from_numpy(coords).float(), torch.from_numpy(labels), torch.zeros(1, 1, 64, 64),
                torch.zeros(1),
            )  # fmt: skip
        assert np.abs(low_res - want.numpy()).max() <= FP32_TOL, count
    with pytest.raises(ValueError, match="at most 16 points"):
        measured.sessions.decode(measured.features, np.zeros((1, 17, 2)), np.ones((1, 17)), None, (192, 256))


def test_decoder_takes_a_batch_of_boxes(expected, measured):
    # The program takes one prompt per run; the sessions run a batch row by row.
    boxes = np.array([[10.0, 20.0, 600.0, 500.0], [300.0, 100.0, 1000.0, 700.0]])
    model_boxes = expected.transform.apply_boxes(boxes, expected.original_size)
    coords, labels = onnx_points(None, None, model_boxes)
    iou, low_res = measured.sessions.decode(
        measured.features, coords, labels, None, expected.original_size, ("iou_predictions", "low_res_masks")
    )
    _, want_iou, want_low_res = expected.predict_torch(None, None, boxes=torch.from_numpy(model_boxes).float())
    assert iou.shape == (2, 4) and low_res.shape == (2, 4, 64, 64)
    assert np.abs(iou[:, 1:] - want_iou.numpy()).max() <= FP32_TOL
    assert np.abs(low_res[:, 1:] - want_low_res.numpy()).max() <= FP32_TOL


@pytest.mark.parametrize("prompt", ["click", "box_and_click"])
def test_single_mask_decoder_matches_sam_onnx_model(exported, measured, prompt):
    # A click plus padding (2 points: the best multimask token) or a box plus a click (3 points: token 0).
    model, _, folder = exported
    embedding = torch.from_numpy(measured.features)
    box = None if prompt == "click" else np.array([[40.0, 30.0, 200.0, 170.0]])
    coords, labels = onnx_points(np.array([[[120.0, 90.0]]]), np.array([[1]]), box)
    inputs = (embedding, torch.from_numpy(coords), torch.from_numpy(labels), torch.zeros(1, 1, 64, 64), torch.zeros(1))
    from executorch.runtime import Runtime

    program = Runtime.get().load_program(folder / "decoder_single.pte")
    iou, low_res = program.load_method("forward").execute(inputs)
    with torch.inference_mode():
        _, want_iou, want_low_res = SamOnnxModel(model, return_single_mask=True)(*inputs, torch.tensor([192.0, 256.0]))
    assert low_res.shape == want_low_res.shape == (1, 1, 64, 64)
    assert (iou - want_iou).abs().max() <= FP32_TOL and (low_res - want_low_res).abs().max() <= FP32_TOL


def test_int8_encoder_masks_agree_with_torch(exported, expected):
    int8 = OnnxPredictor(exported[2], variant="int8", threads=2)
    int8.set_image(demo_image())
    want, got = [], []
    for prompt in demo_prompts(*expected.original_size):
        want.append(expected.predict(**prompt)[0])
        got.append(int8.predict(**prompt)[0])
    agreement = compare_masks(want, got)
    assert agreement.pixels_equal >= INT8_PIXELS_EQUAL, agreement


def test_thread_pool_is_not_resized_under_open_sessions(exported, measured):
    # `measured` holds programs on a pool of 2 threads; ExecuTorch's pool is one for the process.
    with pytest.raises(RuntimeError, match="cannot be resized to 1"):
        open_export(exported[2], threads=1)
    assert open_export(exported[2], threads=2).graphs.decoder_batch == 1


def test_truncated_program_is_a_clear_error(exported, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(exported[2], broken)
    data = (broken / "decoder.pte").read_bytes()
    (broken / "decoder.pte").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"decoder\.pte is not a readable ExecuTorch program"):
        open_export(broken)
