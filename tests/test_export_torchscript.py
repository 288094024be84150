"""The torchscript export and runtime against eager torch, on a seeded random vit_t built for 256x256 inputs.

One export per module (`export_model(format="torchscript")`, about 25 s on
two cores, so the tests that read it are slow ones), read back through
`OnnxPredictor` (the torchscript runtime) and `torch.jit.load`.
"""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch
from exports import agreement_with_torch
from torch import nn

from mobilesam import OnnxPredictor, SamPredictor
from mobilesam.export.formats import export_model
from mobilesam.export.wrappers import SamOnnxModel
from mobilesam.fidelity import demo_image
from mobilesam.registry import build_from_config, get_config
from mobilesam.runtime.runtimes import open_export
from mobilesam.runtime.sessions import onnx_points
from mobilesam.runtime.torchscript import TorchScriptSessions, load_module
from mobilesam.weights import save_checkpoint, sha256_file
from reference import randomize

# fp32 graphs: the embedding and low-res logits are eager torch's to float rounding.
FP32_TOL = 1e-4


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(model, checkpoint, folder): random weights of a 256x256 vit_t, exported as torchscript."""
    root = tmp_path_factory.mktemp("torchscript")
    model = randomize(build_from_config(dataclasses.replace(get_config("vit_t"), image_size=256)), seed=11)
    checkpoint = save_checkpoint(model, root / "random_vit_t_256.pt")
    paths = export_model(model, root / "ts", format="torchscript", model_name="vit_t", weights=checkpoint)
    assert set(paths) == {"encoder", "decoder", "decoder_single", "metadata"}
    return model, checkpoint, root / "ts"


@pytest.fixture(scope="module")
def predictors(exported):
    """(torch SamPredictor, OnnxPredictor over the folder), both holding the demo image."""
    model, _, folder = exported
    image = demo_image()
    expected, measured = SamPredictor(model, backend="torch"), OnnxPredictor(folder)
    expected.set_image(image)
    measured.set_image(image)
    return expected, measured


@pytest.mark.slow
def test_folder_holds_the_modules_and_a_sidecar(exported):
    model, checkpoint, folder = exported
    metadata = json.loads((folder / "metadata.json").read_text())
    assert metadata["format"] == "torchscript" and metadata["model"] == "vit_t" and metadata["image_size"] == 256
    assert metadata["weights"] == {"file": checkpoint.name, "sha256": sha256_file(checkpoint)}
    assert metadata["graphs"]["encoder"]["inputs"] == ["image", "image_size"]
    assert metadata["graphs"]["encoder"]["layout"] == "pixels"
    for role in ("encoder", "decoder", "decoder_single"):
        entry = metadata["graphs"][role]
        assert entry["sha256"] == sha256_file(folder / entry["file"]), role
    assert sorted(p.name for p in folder.iterdir()) == ["decoder.pt", "decoder_single.pt", "encoder.pt", "metadata.json"]


@pytest.mark.slow
def test_masks_and_embedding_match_torch(predictors):
    expected, measured = predictors
    assert isinstance(measured.sessions, TorchScriptSessions)
    assert np.abs(measured.features - expected.features.numpy()).max() <= FP32_TOL
    agreement = agreement_with_torch(expected, measured, FP32_TOL)
    assert agreement.min_iou >= 0.999, agreement


@pytest.mark.slow
def test_decoder_takes_a_batch_of_boxes(predictors):
    expected, measured = predictors
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


@pytest.mark.slow
@pytest.mark.parametrize("prompt", ["click", "box_and_click"])
def test_single_mask_decoder_matches_sam_onnx_model(exported, predictors, prompt):
    # A click plus padding (2 points: best multimask token) or a box plus a click (3 points: token 0).
    model, _, folder = exported
    embedding = torch.from_numpy(predictors[1].features)
    if prompt == "click":
        coords, labels = onnx_points(np.array([[[120.0, 90.0]]]), np.array([[1]]), None)
    else:
        coords, labels = onnx_points(np.array([[[120.0, 90.0]]]), np.array([[1]]), np.array([[40.0, 30.0, 200.0, 170.0]]))
    mask_input, has_mask_input = torch.zeros(1, 1, 64, 64), torch.zeros(1)
    inputs = (embedding, torch.from_numpy(coords), torch.from_numpy(labels), mask_input, has_mask_input)
    with torch.inference_mode():
        iou, low_res = load_module(folder / "decoder_single.pt")(*inputs)
        _, want_iou, want_low_res = SamOnnxModel(model, return_single_mask=True)(*inputs, torch.tensor([192.0, 256.0]))
    assert low_res.shape == want_low_res.shape == (1, 1, 64, 64)
    assert (iou - want_iou).abs().max() <= FP32_TOL and (low_res - want_low_res).abs().max() <= FP32_TOL


@pytest.mark.filterwarnings("ignore:`torch.jit.:FutureWarning")
def test_truncated_module_is_a_clear_error(tmp_path):
    path = tmp_path / "tiny.pt"
    torch.jit.save(torch.jit.script(nn.Linear(4, 2)), str(path))
    assert load_module(path)(torch.ones(1, 4)).shape == (1, 2)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match=r"tiny\.pt is not a readable TorchScript module"):
        load_module(path)


@pytest.mark.slow
def test_truncated_export_is_a_clear_error(exported, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(exported[2], broken)
    data = (broken / "decoder.pt").read_bytes()
    (broken / "decoder.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"decoder\.pt is not a readable TorchScript module"):
        open_export(broken)
