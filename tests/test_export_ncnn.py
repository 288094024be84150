"""The ncnn export (pnnx) and the ncnn runtime against our torch model at random weights.

vit_t built for 256x256 inputs is exported once per module through `export_model` (slow:
tracing and three pnnx runs take most of the time).
ncnn runs one thread here: with more threads than free cores, its barrier after
every layer waits on descheduled threads and a 256 encoder takes seconds.
"""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch

from mobilesam import OnnxPredictor, SamPredictor
from mobilesam.export.formats import export_model
from mobilesam.export.mobile import LowResDecoder
from mobilesam.export.wrappers import SamOnnxModel
from mobilesam.fidelity import FAITHFUL, compare_masks, demo_image, demo_prompts
from mobilesam.registry import build_from_config, get_config
from mobilesam.runtime.layout import find_graphs
from mobilesam.runtime.ncnn import NcnnSessions
from mobilesam.runtime.runtimes import open_export
from reference import randomize

pytest.importorskip("ncnn")
pytest.importorskip("pnnx")

# Low-res logits reach about 15 at random weights; ncnn's fp32 differs from torch's by about 5e-5.
LOGITS_TOL = 1e-3
NCNN_FILES = [f"{role}.ncnn.{suffix}" for role in ("decoder", "decoder_single", "encoder") for suffix in ("bin", "param")]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(model, folder, paths): a seeded random 256x256 vit_t exported in the ncnn format."""
    model = randomize(build_from_config(dataclasses.replace(get_config("vit_t"), image_size=256)), seed=11)
    folder = tmp_path_factory.mktemp("ncnn") / "export"
    paths = export_model(model, folder, format="ncnn", model_name="vit_t")
    return model, folder, paths


@pytest.fixture(scope="module")
def predictors(exported):
    """(torch, ncnn) predictors holding the same image."""
    model, folder, _ = exported
    image = demo_image()
    ours = SamPredictor(model, backend="torch")
    ours.set_image(image)
    ncnn = OnnxPredictor(folder, threads=1)
    ncnn.set_image(image)
    return ours, ncnn


@pytest.fixture(scope="module")
def sessions(exported):
    return open_export(exported[1], threads=1)


def _prompt(model, num_points: int, with_mask: bool) -> tuple[torch.Tensor, ...]:
    """A seeded random decoder input with `num_points` points of every label, and a mask input if asked."""
    generator = torch.Generator().manual_seed(num_points)
    side = model.img_size
    embeddings = torch.randn(1, 256, side // 16, side // 16, generator=generator)
    coords = torch.rand(1, num_points, 2, generator=generator) * side
    labels = torch.tensor([[1.0, 0.0, 2.0, 3.0, 1.0, -1.0][i % 6] for i in range(num_points)])[None]
    mask_input = torch.randn(1, 1, side // 4, side // 4, generator=generator) * float(with_mask)
    return embeddings, coords, labels, mask_input, torch.tensor([float(with_mask)])


@pytest.mark.slow
def test_folder_holds_the_ncnn_pairs_and_sidecar(exported):
    _, folder, paths = exported
    assert sorted(path.name for path in folder.iterdir()) == sorted([*NCNN_FILES, "metadata.json"])
    assert set(paths) == {"encoder", "decoder", "decoder_single", "metadata"}
    metadata = json.loads((folder / "metadata.json").read_text())
    assert metadata["format"] == "ncnn"
    assert metadata["pnnx"] and metadata["ncnn"]
    assert metadata["graphs"]["encoder"]["layout"] == "pixels"
    assert metadata["graphs"]["decoder"]["bin"] == "decoder.ncnn.bin"
    graphs = find_graphs(folder)
    assert graphs.encoder_inputs == ("image", "image_size") and graphs.decoder_batch == 1


@pytest.mark.slow
def test_embedding_matches_torch(predictors):
    ours, ncnn = predictors
    expected = ours.features.numpy()
    assert np.abs(ncnn.features - expected).max() < 1e-3 * np.abs(expected).max()


@pytest.mark.slow
@pytest.mark.parametrize("multimask", [True, False])
def test_masks_match_torch(predictors, multimask):
    ours, ncnn = predictors
    h, w = ours.original_size
    expected, measured = [], []
    for prompt in demo_prompts(h, w):
        expected.extend(ours.predict(**prompt, multimask_output=multimask)[0])
        measured.extend(ncnn.predict(**prompt, multimask_output=multimask)[0])
    agreement = compare_masks(expected, measured)
    assert agreement.min_iou >= FAITHFUL.min_iou, agreement


@pytest.mark.slow
@pytest.mark.parametrize(("num_points", "with_mask"), [(1, False), (6, True)])
def test_decoder_takes_any_number_of_points(exported, sessions, num_points, with_mask):
    model = exported[0]
    inputs = _prompt(model, num_points, with_mask)
    with torch.no_grad():
        iou_predictions, low_res_masks = LowResDecoder(model)(*inputs)
    mask_input = inputs[3].numpy() if with_mask else None
    found = sessions.decode(
        inputs[0].numpy(), inputs[1].numpy(), inputs[2].numpy(), mask_input, (256, 256), ("iou_predictions", "low_res_masks")
    )
    assert found[0].shape == (1, 4) and found[1].shape == (1, 4, 64, 64)
    assert np.abs(found[0] - iou_predictions.numpy()).max() < LOGITS_TOL
    assert np.abs(found[1] - low_res_masks.numpy()).max() < LOGITS_TOL


@pytest.mark.slow
@pytest.mark.parametrize("num_points", [2, 3])
def test_single_mask_decoder_matches_sams_onnx_model(exported, num_points):
    """SAM's rule counts the points: two pick the best multimask token, three pick token 0."""
    model, folder, _ = exported
    graphs = find_graphs(folder)
    single = NcnnSessions(dataclasses.replace(graphs, decoder=graphs.decoder_single), threads=1)
    inputs = _prompt(model, num_points, False)
    with torch.no_grad():
        _, scores, low_res_masks = SamOnnxModel(model, return_single_mask=True)(*inputs, torch.tensor([256.0, 256.0]))
    found = single.decode(
        inputs[0].numpy(), inputs[1].numpy(), inputs[2].numpy(), None, (256, 256), ("iou_predictions", "low_res_masks")
    )
    assert found[0].shape == (1, 1) and found[1].shape == (1, 1, 64, 64)
    assert np.abs(found[0] - scores.numpy()).max() < LOGITS_TOL
    assert np.abs(found[1] - low_res_masks.numpy()).max() < LOGITS_TOL


@pytest.mark.slow
@pytest.mark.parametrize(("name", "damage"), [("encoder.ncnn.bin", "truncate"), ("decoder.ncnn.param", "garbage")])
def test_a_damaged_file_is_named(exported, tmp_path, name, damage):
    folder = tmp_path / "export"
    shutil.copytree(exported[1], folder)
    path = folder / name
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.write_text("not an ncnn param\n")
    with pytest.raises(ValueError, match=name.replace(".", r"\.")):
        open_export(folder, threads=1)


def test_a_vit_encoder_is_refused_before_anything_is_written(tmp_path):
    config = get_config("vit_b")
    tiny_vit_b = dataclasses.replace(config.encoder, depth=1, embed_dim=64, num_heads=2, global_attn_indexes=(0,))
    model = build_from_config(dataclasses.replace(config, image_size=256, encoder=tiny_vit_b))
    with pytest.raises(ValueError, match="TinyViT"):
        export_model(model, tmp_path / "export", format="ncnn", model_name="vit_b")
    assert not (tmp_path / "export").exists()
