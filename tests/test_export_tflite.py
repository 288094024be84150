"""The tflite export (litert-torch) and the litert runtime (ai-edge-litert) against our torch model at random weights.

The converter is litert-torch, installed without its dependencies into the test
cache (`clients.installed_client`; about 700 MB, a minute or two the first time):
its converter pins typing-extensions < 4.13, which would take our pydantic back.
It converts in a subprocess, so its and JAX's registrations with torch stay out of
this one. One export of vit_t at 256x256 for 2 and 3 prompt points (the demo
prompts' counts) with its int8 encoder, plus the fp16 encoder the writer's
`quantize_encoder` makes from it, serves every test; converting takes minutes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from clients import installed_client
from mobilesam import OnnxPredictor, SamPredictor
from mobilesam.export.tflite import export_tflite
from mobilesam.export.wrappers import SamOnnxModel
from mobilesam.fidelity import FAITHFUL, Agreement, compare_masks, demo_image, demo_prompts
from mobilesam.registry import build_from_config, get_config
from mobilesam.runtime.layout import find_graphs
from mobilesam.runtime.litert import LiteRtSessions
from mobilesam.runtime.runtimes import open_export
from mobilesam.runtime.sessions import onnx_points
from mobilesam.weights import sha256_file
from reference import randomize

pytest.importorskip("ai_edge_litert")
pytestmark = pytest.mark.slow

# litert-torch and what it imports when converting; the rest of its dependencies are ours or go unused.
CONVERTER = [
    "litert-torch==0.10.0",
    "litert-converter==0.5.0",
    "xdsl==0.28.0",
    "ai-edge-quantizer==0.10.0",
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "opt_einsum==3.4.0",
    "immutabledict==4.2.1",
]
SEED = 5
POINTS = (2, 3)
# Dynamic-range int8 at random weights: 98.8% of pixels equal fp32's (seeded run; one box mask's IoU falls to 0.48,
# as random weights put many logits near 0); fp16 weights: 99.95%, min IoU 0.98.
INT8 = Agreement(pixels_equal=0.95, min_iou=0.0)
FP16 = Agreement(pixels_equal=0.99, min_iou=0.9)

_EXPORT = """
import dataclasses, json, sys
from pathlib import Path

from mobilesam.atomic import write_bytes_atomic, write_text_atomic
from mobilesam.export.formats import export_model
from mobilesam.export.mobile import ENCODER_INPUTS, ENCODER_OUTPUTS
from mobilesam.export.tflite import quantize_encoder
from mobilesam.registry import build_from_config, get_config
from mobilesam.runtime.layout import graph_entry
from reference import randomize

out = Path(sys.argv[1])
model = randomize(build_from_config(dataclasses.replace(get_config("vit_t"), image_size=256)), seed={seed})
export_model(model, out, format="tflite", model_name="vit_t", quantize="int8", points={points})
# The fp16 encoder beside the int8 one, as `quantize="fp16"` writes it, without converting everything again.
write_bytes_atomic(out / "encoder.fp16.tflite", quantize_encoder(out / "encoder.tflite", "fp16"))
metadata = json.loads((out / "metadata.json").read_text())
metadata["graphs"]["encoder.fp16"] = graph_entry("encoder.fp16.tflite", ENCODER_INPUTS, ENCODER_OUTPUTS, layout="pixels")
write_text_atomic(out / "metadata.json", json.dumps(metadata))
"""


def small_model() -> torch.nn.Module:
    return randomize(build_from_config(dataclasses.replace(get_config("vit_t"), image_size=256)), seed=SEED)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(model, folder): the export, converted in a subprocess with litert-torch on its path."""
    converter = installed_client("litert-torch-0.10.0", CONVERTER, own_venv=False)
    folder = tmp_path_factory.mktemp("tflite") / "vit_t"
    tests = Path(__file__).parent
    script = textwrap.dedent(_EXPORT).format(seed=SEED, points=POINTS)
    env = {**os.environ, "PYTHONPATH": f"{tests}:{converter}"}
    run = subprocess.run([sys.executable, "-c", script, str(folder)], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr[-4000:]
    return small_model(), folder


@pytest.fixture(scope="module")
def torch_results(exported):
    """The torch predictor on the demo image, and its masks for the demo prompts."""
    predictor = SamPredictor(exported[0], backend="torch")
    image = demo_image()
    predictor.set_image(image)
    return image, predictor, [predictor.predict(**prompt) for prompt in demo_prompts(*image.shape[:2])]


def _masks(results) -> list[np.ndarray]:
    return [mask for masks, _, _ in results for mask in masks]


def test_export_writes_flatbuffers_and_a_sidecar(exported):
    _, folder = exported
    metadata = json.loads((folder / "metadata.json").read_text())
    assert metadata["format"] == "tflite" and metadata["image_size"] == 256
    assert metadata["decoder_points"] == list(POINTS) and metadata["litert_torch"] == "0.10.0"
    assert metadata["quantization"]["encoder.int8"].startswith("dynamic-range int8")
    assert set(metadata["graphs"]) == {"encoder", "decoder", "decoder_single", "encoder.int8", "encoder.fp16"}
    for role in ("encoder", "decoder", "decoder_single", "encoder.int8"):
        entry = metadata["graphs"][role]
        assert entry["sha256"] == sha256_file(folder / entry["file"])
    sessions = open_export(folder)
    assert sessions.point_counts == POINTS
    # Weights-only variants: each well under the fp32 encoder's size.
    fp32 = (folder / "encoder.tflite").stat().st_size
    assert (folder / "encoder.int8.tflite").stat().st_size < 0.5 * fp32
    assert (folder / "encoder.fp16.tflite").stat().st_size < 0.7 * fp32


def test_fp32_matches_torch(exported, torch_results):
    _, folder = exported
    image, predictor, expected = torch_results
    litert = OnnxPredictor(folder, threads=2)
    litert.set_image(image)
    assert np.abs(litert.features - predictor.features.numpy()).max() < 1e-4
    measured = [litert.predict(**prompt) for prompt in demo_prompts(*image.shape[:2])]
    agreement = compare_masks(_masks(expected), _masks(measured))
    assert agreement.meets(FAITHFUL), agreement
    for (_, want_scores, want_logits), (_, scores, logits) in zip(expected, measured, strict=True):
        np.testing.assert_allclose(scores, want_scores, atol=1e-4)
        np.testing.assert_allclose(logits, want_logits, atol=1e-3)


@pytest.mark.parametrize(("variant", "bar"), [("int8", INT8), ("fp16", FP16)])
def test_reduced_precision_encoders_agree(exported, torch_results, variant, bar):
    _, folder = exported
    image, predictor, expected = torch_results
    litert = OnnxPredictor(folder, variant=variant, threads=2)
    litert.set_image(image)
    assert litert.sessions.graphs.encoder.name == f"encoder.{variant}.tflite"
    measured = [litert.predict(**prompt) for prompt in demo_prompts(*image.shape[:2])]
    agreement = compare_masks(_masks(expected), _masks(measured))
    assert agreement.meets(bar), agreement


def test_single_mask_decoder_matches_sam_onnx_model(exported, torch_results):
    model, folder = exported
    _, predictor, _ = torch_results
    graphs = find_graphs(folder)
    sessions = LiteRtSessions(dataclasses.replace(graphs, decoder=graphs.decoder_single), threads=2)
    embedding = predictor.features.numpy()
    reference = SamOnnxModel(model, return_single_mask=True).eval()
    side = model.img_size
    # One click (2 points with the padding one: the best multimask token) and a box with a click (3: token 0).
    prompts = [
        (np.array([[[side * 0.5, side * 0.4]]]), np.array([[1]]), None),
        (np.array([[[side * 0.45, side * 0.5]]]), np.array([[1]]), np.array([[side * 0.2, side * 0.25, side * 0.7, side * 0.8]])),
    ]
    for points, labels, box in prompts:
        coords, labels = onnx_points(points, labels, box)
        scores, logits = sessions.decode(embedding, coords, labels, None, (side, side), ("iou_predictions", "low_res_masks"))
        feeds = [torch.from_numpy(a) for a in (embedding, coords, labels, np.zeros((1, 1, side // 4, side // 4), np.float32))]
        with torch.no_grad():
            _, want_scores, want_logits = reference(*feeds, torch.zeros(1), torch.tensor([side, side], dtype=torch.float32))
        assert logits.shape == (1, 1, side // 4, side // 4)
        np.testing.assert_allclose(scores, want_scores.numpy(), atol=1e-4)
        np.testing.assert_allclose(logits, want_logits.numpy(), atol=1e-3)


def test_a_point_count_not_exported_names_those_that_were(exported, torch_results):
    _, folder = exported
    image, predictor, _ = torch_results
    litert = OnnxPredictor(folder, threads=2)
    litert.set_embedding(predictor.embedding)
    clicks = np.array([[10.0, 10.0], [50.0, 60.0], [90.0, 30.0]])  # 3 clicks + the padding point: 4
    with pytest.raises(ValueError, match="takes prompts of 2, 3 points"):
        litert.predict(point_coords=clicks, point_labels=np.array([1, 1, 0]))


def test_a_truncated_flatbuffer_is_a_clear_error(exported, tmp_path):
    _, folder = exported
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    encoder = broken / "encoder.tflite"
    encoder.write_bytes(encoder.read_bytes()[:100_000])
    with pytest.raises(ValueError, match="encoder.tflite is not a readable LiteRT flatbuffer"):
        open_export(broken)


@pytest.mark.parametrize(
    ("options", "message"), [({"points": (3, 4)}, "include 2"), ({"quantize": "int4"}, "unknown tflite quantisation")]
)
def test_bad_options_fail_before_converting(tmp_path, options, message):
    with pytest.raises(ValueError, match=message):
        export_tflite(small_model(), tmp_path, model_name="vit_t", **options)
