"""The runtime and export-format tables, the shared phone-graph contract, and the OpenVINO IR format.

Each phone format has its own test file (tests/test_export_<format>.py) that
runs its converter and its runtime; here: that the tables hold together, that
the graphs every phone format converts reproduce the model, and the errors.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from mobilesam import SAM, OnnxPredictor, SamPredictor
from mobilesam.export import FORMATS, export_model
from mobilesam.export.mobile import LowResDecoder, PixelEncoder, label_one_hot
from mobilesam.export.wrappers import SamOnnxModel
from mobilesam.fidelity import FAITHFUL, compare_masks, demo_image, demo_prompts
from mobilesam.registry import build_from_config, get_config
from mobilesam.runtime import RUNTIMES, GraphSessions, open_export
from mobilesam.runtime.runtimes import Runtime, runtime_for_format, runtime_named
from mobilesam.runtime.sessions import onnx_points
from mobilesam.transforms import pad_pixels, resize_bilinear, upscale_logits
from mobilesam.weights import save_checkpoint, sha256_file
from reference import randomize


@pytest.fixture(scope="module")
def small():
    """A seeded vit_t for 256x256 inputs, and the torch reference predictor on the demo image."""
    model = randomize(build_from_config(dataclasses.replace(get_config("vit_t"), image_size=256)), seed=11).eval()
    predictor = SamPredictor(model, backend="torch")
    predictor.set_image(demo_image(192, 256))
    return model, predictor


def test_every_runtime_row_names_a_sessions_class_that_runs_its_formats():
    for runtime in RUNTIMES.values():
        assert runtime.formats and runtime.summary
        if runtime.runs_here:
            assert issubclass(runtime.sessions_class(), GraphSessions), runtime.name
        else:
            with pytest.raises(RuntimeError, match="converted and validated only"):
                runtime.sessions_class()
    every_format = {f for runtime in RUNTIMES.values() for f in runtime.formats}
    # Every format a runtime runs is one `mobilesam export` writes.
    assert every_format <= set(FORMATS)
    assert runtime_for_format("onnx").name == "onnxruntime"


def test_every_format_row_names_its_writer():
    for row in FORMATS.values():
        assert callable(row.writer_function()), row.name


def test_a_runtime_that_is_not_installed_names_its_extra():
    missing = Runtime("phantom", ("onnx",), "onnxruntime", "OnnxRuntimeSessions", ("no_such_runtime_module",), "phantom", "-")
    with pytest.raises(ImportError, match=r"no_such_runtime_module: pip install 'mobilesam\[phantom\]'"):
        missing.sessions_class()


def test_unknown_runtime_and_format_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown runtime 'tensorrt'; known: onnxruntime, openvino"):
        runtime_named("tensorrt")
    with pytest.raises(ValueError, match="no runtime here runs 'coreml' exports"):
        runtime_for_format("coreml")
    with pytest.raises(FileNotFoundError, match="not a `mobilesam export` folder"):
        open_export(tmp_path)


def test_pixel_encoder_pads_and_normalises_as_the_model_does(small):
    model, predictor = small
    resized = predictor.transform.apply_image(demo_image(192, 256))
    image, image_size = pad_pixels(resized, model.img_size)
    # Whatever lies outside the resized image must not matter: the graph zeroes it after normalising.
    image[0, resized.shape[0] :] = 255
    with torch.inference_mode():
        embedding = PixelEncoder(model)(torch.from_numpy(image), torch.from_numpy(image_size))
    assert torch.allclose(embedding, predictor.features, atol=1e-4)


def test_label_one_hot_is_exact_on_every_label():
    labels = torch.tensor([[-1.0, 0.0, 1.0, 2.0, 3.0]])
    assert torch.equal(label_one_hot(labels)[0], torch.eye(5))


def test_low_res_decoder_and_numpy_upscaling_give_the_model_masks(small):
    model, predictor = small
    h, w = 192, 256
    decoder, single = LowResDecoder(model), LowResDecoder(model, single_mask=True)
    sam_single = SamOnnxModel(model, return_single_mask=True)
    expected, measured = [], []
    for prompt in demo_prompts(h, w):
        masks, _, low_res = predictor.predict(**prompt)
        coords = None if "point_coords" not in prompt else predictor.transform.apply_coords(prompt["point_coords"], (h, w))[None]
        labels = None if "point_labels" not in prompt else prompt["point_labels"][None]
        box = None if "box" not in prompt else predictor.transform.apply_boxes(prompt["box"], (h, w))
        coords, labels = (torch.from_numpy(a) for a in onnx_points(coords, labels, box))
        empty = (torch.zeros(1, 1, *model.prompt_encoder.mask_input_size), torch.zeros(1))
        with torch.inference_mode():
            iou, low = decoder(predictor.features, coords, labels, *empty)
            single_iou, single_low = single(predictor.features, coords, labels, *empty)
            _, want_iou, want_low = sam_single(
                predictor.features, coords, labels, *empty, torch.tensor([h, w], dtype=torch.float32)
            )
        np.testing.assert_allclose(low[0, 1:].numpy(), low_res, atol=1e-4)
        torch.testing.assert_close(single_low, want_low, atol=1e-4, rtol=0)
        torch.testing.assert_close(single_iou, want_iou, atol=1e-5, rtol=0)
        upscaled = upscale_logits(low[0, 1:].numpy(), predictor.input_size, (h, w), model.img_size)
        expected.extend(masks)
        measured.extend(upscaled > model.mask_threshold)
    assert compare_masks(expected, measured).meets(FAITHFUL)


def test_numpy_upscaling_is_torch_bilinear():
    logits = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    want = torch.nn.functional.interpolate(logits, (301, 77), mode="bilinear", align_corners=False)
    np.testing.assert_allclose(resize_bilinear(logits.numpy(), (301, 77)), want.numpy(), atol=1e-4)


@pytest.mark.slow
def test_openvino_format_runs_like_torch_and_the_onnx_alias_still_writes_onnx(small, tmp_path):
    pytest.importorskip("openvino")
    model, predictor = small
    paths = export_model(model, tmp_path / "ir", format="openvino", model_name="vit_t")
    assert paths["encoder"].suffix == ".xml" and paths["encoder"].with_suffix(".bin").is_file()
    metadata = json.loads(paths["metadata"].read_text())
    assert metadata["format"] == "openvino" and metadata["graphs"]["encoder"]["layout"] == "normalized"
    ir = OnnxPredictor(tmp_path / "ir", threads=2)
    assert type(ir.sessions).__name__ == "OpenVinoSessions"
    image = demo_image(192, 256)
    ir.set_image(image)
    np.testing.assert_allclose(ir.features, predictor.features.numpy(), atol=1e-4)
    expected = [predictor.predict(**prompt)[0] for prompt in demo_prompts(*image.shape[:2])]
    measured = [ir.predict(**prompt)[0] for prompt in demo_prompts(*image.shape[:2])]
    assert compare_masks([m for ms in expected for m in ms], [m for ms in measured for m in ms]).meets(FAITHFUL)
    with pytest.raises(ValueError, match="holds 'openvino' graphs; the onnxruntime runtime runs onnx"):
        OnnxPredictor(tmp_path / "ir", runtime="onnxruntime")
    onnx_paths = export_model(model, tmp_path / "onnx", format="mobilesam", model_name="vit_t")
    assert json.loads(onnx_paths["metadata"].read_text())["format"] == "onnx"


def test_sam_export_takes_ultralytics_keywords(small, tmp_path):
    model, _ = small
    checkpoint = save_checkpoint(model, tmp_path / "small_vit_t.pt")
    sam = SAM(checkpoint, backend="torch")
    folder = sam.export("onnx", int8=True, out=tmp_path / "onnx")
    metadata = json.loads((tmp_path / "onnx" / "metadata.json").read_text())
    assert folder == str(tmp_path / "onnx") and metadata["weights"]["sha256"] == sha256_file(checkpoint)
    assert (tmp_path / "onnx" / "encoder.int8.onnx").is_file()
    with pytest.raises(ValueError, match="the onnx format has no 'fp16' encoder; its quantize options: int8, int8-static"):
        sam.export("onnx", half=True, out=tmp_path / "half")
    with pytest.raises(ValueError, match="unknown export format 'engine'"):
        sam.export("engine", out=tmp_path / "engine")
    assert not (tmp_path / "half").exists() and not (tmp_path / "engine").exists()
