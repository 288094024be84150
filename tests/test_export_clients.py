"""Our export formats in the code of the clients that load them, against `SamPredictor` on torch.

- `sam`: SAM's single-mask decoder, run in onnxruntime as SAM's notebook runs it.
- `anylabeling`: the zip, loaded by the clients' own installed code, each in its
  own environment under ~/.cache/mobilesam-tests/clients (built once, from the
  package index): samexporter 0.5.0 and 0.4.6 (`SegmentAnythingONNX`; installed
  without dependencies, since they pin torch 2.10, and run on this venv's
  onnxruntime, numpy and OpenCV), AnyLabeling 0.4.43 and X-AnyLabeling 4.2.1
  (their `segment_anything` model class on our config.yaml, headless Qt, each in
  its own venv since both install the `anylabeling` package).

The apps hard-code 1024 inputs, so the bundle is the full vit_t at random
weights. They fit every image into 684x1024 and normalise the black border
they add, so the test image is 684x1024: then their pixels are exactly
`SamPredictor`'s and the logits must agree to fp32 rounding.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from clients import installed_client
from images import generated_image
from mobilesam import SamPredictor
from mobilesam.cli import app
from mobilesam.export import EXPORT_FORMATS, export_model
from mobilesam.masks import calculate_stability_score
from mobilesam.registry import build_from_config, get_config
from mobilesam.runtime.onnxruntime import onnxruntime_session
from mobilesam.utils.onnx import SamOnnxModel
from reference import randomize
from tolerance import assert_close, decoder_layers, encoder_layers

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

H, W = 684, 1024
# onnxruntime against torch on the same decoder: `test_export.py`'s bar (measured here: up to 5e-5 on logits of ~8).
ONNX_TOL = 1e-4
BOX = [150.0, 100.0, 800.0, 600.0]
# The apps' marks: image-frame XY; each list is one object's prompt.
MARKS = {
    "point": [{"type": "point", "data": [520, 300], "label": 1}],
    "points": [{"type": "point", "data": [520, 300], "label": 1}, {"type": "point", "data": [200, 150], "label": 0}],
    "box": [{"type": "rectangle", "data": BOX, "label": 1}],
}


# --- the sam format: SAM's single-mask decoder ---------------------------------------------------


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """(model, predictor on a photo-like image, sam export folder) for vit_t built for 256 inputs."""
    model = randomize(build_from_config(dataclasses.replace(get_config("vit_t"), image_size=256)), seed=7)
    folder = tmp_path_factory.mktemp("sam") / "sam"
    export_model(model, folder, format="sam", model_name="vit_t")
    predictor = SamPredictor(model, backend="torch")
    predictor.set_image(generated_image(300, 451))
    return model, predictor, folder


@pytest.mark.parametrize(
    ("coords", "labels", "pad"),
    [
        ([[200.0, 120.0]], [1], True),  # one click + padding: 2 points, the best multimask answer
        ([[200.0, 120.0], [60.0, 250.0]], [1, 0], True),  # 3 points: the single-mask answer
        ([[40.0, 30.0], [380.0, 260.0]], [2, 3], False),  # a box alone, as SAM's notebook sends it: 2 points
    ],
    ids=["click", "two-clicks", "box"],
)
def test_sam_decoder_follows_select_masks(small, coords, labels, pad):
    model, predictor, folder = small
    h, w = predictor.original_size
    points = np.array(coords + [[0.0, 0.0]] * pad)
    point_labels = np.array(labels + [-1] * pad, np.float32)
    feeds = {
        "image_embeddings": predictor.features.numpy(),
        "point_coords": predictor.transform.apply_coords(points, (h, w)).astype(np.float32)[None],
        "point_labels": point_labels[None],
        "mask_input": np.zeros((1, 1, *model.prompt_encoder.mask_input_size), np.float32),
        "has_mask_input": np.zeros(1, np.float32),
        "orig_im_size": np.array([h, w], np.float32),
    }
    session = onnxruntime_session(folder / "decoder.onnx")
    masks, scores, low_res = session.run(None, feeds)
    multimask = len(point_labels) <= 2
    if 2 in labels:
        prompt = {"box": np.array(coords).reshape(4)}
    else:
        prompt = {"point_coords": np.array(coords), "point_labels": np.array(labels)}
    want, want_scores, want_low_res = predictor.predict(**prompt, multimask_output=multimask, return_logits=True)
    assert masks.shape == (1, 1, h, w) and scores.shape == (1, 1) and low_res.shape == (1, 1, *want_low_res.shape[1:])
    best = int(np.argmax(want_scores))
    # SAM's wrapper class, importable where SAM's code imports it, runs our model's own modules:
    # in torch it gives `SamPredictor`'s answer to fp32 rounding.
    wrapper = SamOnnxModel(model, return_single_mask=True)
    with torch.no_grad():
        torch_outputs = wrapper(*(torch.from_numpy(feeds[node.name]) for node in session.get_inputs()))
    for what, theirs, want_one in zip(("mask", "score", "low-res"), torch_outputs, (want, want_scores, want_low_res)):
        assert_close(theirs[0, 0], want_one[best], f"SamOnnxModel {what}", decoder_layers(model))
    # The graph in onnxruntime, held to the bar test_export.py holds the onnx backend's decoder to.
    for what, ours, theirs in zip(("mask", "score", "low-res"), (masks, scores, low_res), torch_outputs):
        assert np.abs(ours - theirs.numpy()).max() <= ONNX_TOL, f"onnxruntime {what}"


def test_sam_wrapper_options_match_sam(small):
    """All four masks without return_single_mask; stability scores and areas with return_extra_metrics."""
    model, predictor, _ = small
    h, w = predictor.original_size
    coords = predictor.transform.apply_coords(np.array([[200.0, 120.0], [0.0, 0.0]]), (h, w))
    inputs = (
        predictor.features,
        torch.tensor(coords, dtype=torch.float32)[None],
        torch.tensor([[1.0, -1.0]]),
        torch.zeros(1, 1, *model.prompt_encoder.mask_input_size),
        torch.zeros(1),
        torch.tensor([float(h), float(w)]),
    )
    with torch.no_grad():
        masks, scores, low_res = SamOnnxModel(model, return_single_mask=False)(*inputs)
        extra = SamOnnxModel(model, return_single_mask=True, use_stability_score=True, return_extra_metrics=True)(*inputs)
    want, want_scores, _ = predictor.predict(
        point_coords=np.array([[200.0, 120.0]]), point_labels=np.array([1]), multimask_output=True, return_logits=True
    )
    assert masks.shape == (1, 4, h, w) and low_res.shape == (1, 4, *model.prompt_encoder.mask_input_size)
    assert_close(masks[0, 1:], want, "multimask logits", decoder_layers(model))
    assert_close(scores[0, 1:], want_scores, "multimask scores", decoder_layers(model))
    masks1, stability_as_score, stability, areas, low_res1 = extra
    assert masks1.shape == (1, 1, h, w)
    assert torch.equal(areas, (masks1 > 0).sum((-1, -2)))
    assert torch.equal(stability, calculate_stability_score(masks1, 0.0, 1.0))
    # Scored by stability, a click (2 points with the padding) gets the most stable multimask answer.
    all_stability = calculate_stability_score(low_res, 0.0, 1.0)
    best = 1 + int(torch.argmax(all_stability[0, 1:]))
    assert torch.equal(low_res1[0, 0], low_res[0, best])
    assert torch.equal(stability_as_score[0, 0], all_stability[0, best])


def test_sam_format_refuses_a_mobilesam_folder(small, tmp_path):
    model = small[0]
    (tmp_path / "metadata.json").write_text("{}")
    with pytest.raises(ValueError, match="four-mask decoder.onnx"):
        export_model(model, tmp_path, format="sam", model_name="vit_t")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metadata.json"]


def test_unknown_format_is_a_clear_error(small, tmp_path):
    known = "onnx, sam, anylabeling, openvino, executorch, tflite, coreml, ncnn, torchscript, web"
    with pytest.raises(ValueError, match=f"unknown export format 'onnx2'; known: {known}"):
        export_model(small[0], tmp_path, format="onnx2", model_name="vit_t")
    result = CliRunner().invoke(app, ["export", "-m", "vit_t", "--format", "onnx2", "-o", str(tmp_path / "x")])
    assert result.exit_code == 2 and f"--format must be one of {known}" in result.output
    assert not (tmp_path / "x").exists()
    assert set(EXPORT_FORMATS) == set(known.split(", "))


def test_anylabeling_refuses_other_input_sizes(small, tmp_path):
    with pytest.raises(ValueError, match="resize images to 1024 themselves; this model takes 256x256"):
        export_model(small[0], tmp_path / "b.zip", format="anylabeling", model_name="vit_t")
    with pytest.raises(ValueError, match="the anylabeling format has no 'int8' encoder; its quantize options: none"):
        export_model(small[0], tmp_path / "b.zip", format="anylabeling", model_name="vit_t", quantize="int8")
    assert not any(tmp_path.iterdir())


# --- the anylabeling bundle in the clients' own code -----------------------------------------------


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """(model, zip, extracted model folder) for the full vit_t at random weights."""
    root = tmp_path_factory.mktemp("anylabeling")
    model = randomize(build_from_config(get_config("vit_t")), seed=3)
    path = export_model(model, root / "bundle.zip", format="anylabeling", model_name="vit_t")["bundle"]
    with zipfile.ZipFile(path) as archive:
        archive.extractall(root / "extracted")
    return model, path, root / "extracted" / "mobilesam_vit_t"


@pytest.fixture(scope="module")
def image_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("image") / "image.png"
    Image.fromarray(generated_image(H, W, seed=2)).save(path)
    return path


@pytest.fixture(scope="module")
def expected(bundle, image_file) -> dict[str, np.ndarray]:
    """name -> (H, W) logits the clients must give, from `SamPredictor` on torch.

    The clients append a padding point to every prompt, a box too, so SAM's
    `select_masks` sees 2 points for a click (best multimask answer) and 3 for
    the others (the single-mask answer). `SamPredictor` adds no padding to a
    box, so the box's reference runs our model's own modules with that point.
    """
    model = bundle[0]
    predictor = SamPredictor(model, backend="torch")
    predictor.set_image(np.asarray(Image.open(image_file)))
    logits, scores, _ = predictor.predict(
        point_coords=np.array([[520.0, 300.0]]), point_labels=np.array([1]), multimask_output=True, return_logits=True
    )
    two, _, _ = predictor.predict(
        point_coords=np.array([[520.0, 300.0], [200.0, 150.0]]),
        point_labels=np.array([1, 0]),
        multimask_output=False,
        return_logits=True,
    )
    return {"point": logits[int(np.argmax(scores))], "points": two[0], "box": _box_with_padding(model, predictor)}


def _box_with_padding(model, predictor: SamPredictor) -> np.ndarray:
    """Single-mask logits of BOX plus a padding point (0, 0) labelled -1, through the model's own modules."""
    box = torch.as_tensor(predictor.transform.apply_boxes(np.array([BOX]), predictor.original_size), dtype=torch.float32)
    points = (torch.zeros(1, 1, 2), -torch.ones(1, 1))
    with torch.no_grad():
        sparse, dense = model.prompt_encoder(points, box, None)
        low_res, _ = model.mask_decoder(predictor.features, model.prompt_encoder.get_dense_pe(), sparse, dense, False)
        masks = model.postprocess_masks(low_res, predictor.input_size, predictor.original_size)
    return masks[0, 0].numpy()


@pytest.mark.slow
def test_bundle_layout_and_configs(bundle):
    _, path, folder = bundle
    with zipfile.ZipFile(path) as archive:
        names = sorted(archive.namelist())
    stem = "mobilesam_vit_t/mobilesam_vit_t"
    assert names == sorted(
        [
            "mobilesam_vit_t/config.yaml",
            "mobilesam_vit_t/config.quant.yaml",
            *(f"{stem}.{part}.{kind}onnx" for part in ("encoder", "decoder") for kind in ("", "quant.")),
        ]
    )
    import yaml

    config = yaml.safe_load((folder / "config.yaml").read_text())
    assert config == {
        "type": "segment_anything",
        "name": "mobilesam_vit_t",
        "display_name": "MobileSAM (mobilesam_vit_t)",
        "encoder_model_path": "mobilesam_vit_t.encoder.onnx",
        "decoder_model_path": "mobilesam_vit_t.decoder.onnx",
        "input_size": 1024,
        "max_width": 1024,
        "max_height": 682,
    }
    quant = yaml.safe_load((folder / "config.quant.yaml").read_text())
    assert quant["encoder_model_path"] == "mobilesam_vit_t.encoder.quant.onnx" and quant["name"] == "mobilesam_vit_t_quant"
    encoder = onnxruntime_session(folder / config["encoder_model_path"]).get_inputs()[0]
    assert encoder.name == "input_image" and encoder.type == "tensor(float)"
    assert [d if isinstance(d, int) else "dynamic" for d in encoder.shape] == ["dynamic", "dynamic", 3]


@pytest.mark.slow
def test_bundle_replaces_an_old_one_whole_or_not_at_all(bundle, tmp_path, monkeypatch):
    """A write that fails half way through the zip leaves the old bundle and no temporaries."""
    from mobilesam.export import anylabeling

    model, path, folder = bundle
    target = tmp_path / "bundle.zip"
    target.write_bytes(b"the old bundle")

    def copy_graphs(model, into: Path, name: str, opset: int) -> None:
        for graph in folder.glob("*.onnx"):
            shutil.copy(graph, into / graph.name)

    def disk_full(self, filename, arcname=None, *args, **kwargs):
        if str(arcname).endswith("encoder.onnx"):
            raise OSError(28, "No space left on device")
        return original_write(self, filename, arcname, *args, **kwargs)

    original_write = zipfile.ZipFile.write
    monkeypatch.setattr(anylabeling, "_write_graphs", copy_graphs)
    monkeypatch.setattr(zipfile.ZipFile, "write", disk_full)
    with pytest.raises(OSError, match="No space left"):
        export_model(model, target, format="anylabeling", model_name="vit_t")
    assert target.read_bytes() == b"the old bundle"
    assert [p.name for p in tmp_path.iterdir()] == ["bundle.zip"]


# The clients, each with what it needs installed, and how it runs: "samexporter" clients
# are pure Python run on this interpreter; the apps get a venv of their own.
CLIENTS = {
    "samexporter-0.5.0": ("samexporter", ["samexporter==0.5.0"]),
    "samexporter-0.4.6": ("samexporter", ["samexporter==0.4.6"]),
    "anylabeling-0.4.43": ("app", ["anylabeling==0.4.43"]),
    "x-anylabeling-4.2.1": ("app", ["x-anylabeling-cvhub[cpu]==4.2.1"]),
}

DRIVER = r"""
import json, sys
import cv2
import numpy as np

client, folder, image_path, marks_path, out_path = sys.argv[1:]
marks = json.load(open(marks_path))
bgr = cv2.imread(image_path)
rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
results = {}
if client.startswith("samexporter"):
    from samexporter.sam_onnx import SegmentAnythingONNX

    model = SegmentAnythingONNX(f"{folder}/mobilesam_vit_t.encoder.onnx", f"{folder}/mobilesam_vit_t.decoder.onnx")
    # 0.5.0 takes OpenCV's BGR and converts; 0.4.6 feeds what it gets, so it is given RGB as the apps give it.
    embedding = model.encode(bgr if client == "samexporter-0.5.0" else rgb)
    for name, prompt in marks.items():
        results[name] = model.predict_masks(embedding, prompt)
else:
    import yaml
    from PyQt6.QtGui import QGuiApplication, QImage

    application = QGuiApplication([])
    if client.startswith("x-anylabeling"):
        # What X-AnyLabeling's app.main does before any model is built: name its settings file ($HOME is a tmp dir).
        import os
        import anylabeling.config as settings

        settings.current_config_file = os.path.expanduser("~/.xanylabelingrc")
    from anylabeling.services.auto_labeling.segment_anything import SegmentAnything

    for config_name in ("config.yaml", "config.quant.yaml"):
        config_file = f"{folder}/{config_name}"
        config = yaml.safe_load(open(config_file))
        config["config_file"] = config_file
        model = SegmentAnything(config, on_message=print)
        tag = "" if config_name == "config.yaml" else "quant_"
        for name, prompt in marks.items():
            model.set_auto_labeling_marks(prompt)
            shapes = model.predict_shapes(QImage(image_path), image_path)
            results[f"{tag}shapes_{name}"] = np.array(len(shapes.shapes))
            results[f"{tag}{name}"] = model.model.predict_masks(model.model.encode(rgb), prompt)
np.savez(out_path, **results)
"""


def _client_command(client: str) -> tuple[list[str], dict[str, str]]:
    """The interpreter and environment that run `client`, installed into the cache the first time."""
    kind, requirements = CLIENTS[client]
    home = installed_client(client, requirements, own_venv=kind != "samexporter")
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "OMP_NUM_THREADS": "2"}
    if kind == "samexporter":
        return [sys.executable], {**env, "PYTHONPATH": str(home)}
    return [str(home / "bin" / "python")], env


@pytest.mark.slow
@pytest.mark.parametrize("client", list(CLIENTS))
def test_client_segments_like_the_predictor(client, bundle, image_file, expected, tmp_path):
    model, _, folder = bundle
    command, env = _client_command(client)
    marks_path, out = tmp_path / "marks.json", tmp_path / "out.npz"
    marks_path.write_text(json.dumps(MARKS))
    # The apps write their settings under $HOME; keep them out of the user's.
    env["HOME"] = str(tmp_path)
    run = subprocess.run(
        [*command, "-c", DRIVER, client, str(folder), str(image_file), str(marks_path), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    results = np.load(out)
    layers = encoder_layers(model) + decoder_layers(model)
    for name, want in expected.items():
        masks = results[name]
        assert masks.shape == (1, 1, H, W), f"{client} {name}: {masks.shape}"
        assert_close(masks[0, 0], want, f"{client} {name} logits", layers)
        if f"shapes_{name}" in results:
            assert int(results[f"shapes_{name}"]) > 0, f"{client} found no shape for the {name} prompt"
            assert int(results[f"quant_shapes_{name}"]) > 0, f"{client} int8 found no shape for the {name} prompt"
            agree = ((results[f"quant_{name}"][0, 0] > 0) == (want > 0)).mean()
            assert agree >= 0.9, f"{client} int8 {name}: masks agree on {agree:.1%} of pixels"
