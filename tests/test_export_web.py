"""`mobilesam export --format web`: the page as a static folder, its models and web.json, on a seeded 256 px vit_t.

The page itself running in a browser is `tests/test_server_browser.py`'s job;
here the folder is exported once by the CLI, damaged, and exported again by
`export_model` into the same place.
"""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
from typer.testing import CliRunner

from mobilesam import OnnxPredictor, SamPredictor
from mobilesam.api import SAM
from mobilesam.cli import app
from mobilesam.export import export_model
from mobilesam.export.web import VENDOR_DIR, export_web, served_page_dir
from mobilesam.fidelity import FAITHFUL, compare_masks, demo_image, demo_prompts
from mobilesam.registry import MODEL_CONFIGS, build_from_config
from mobilesam.weights import save_checkpoint, sha256_file
from reference import randomize

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

MODELS = ["models/decoder.onnx", "models/encoder.int8.onnx", "models/encoder.onnx", "models/metadata.json"]


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """(model, checkpoint, patched config): a seeded vit_t for 256x256 inputs, saved where the CLI can load it."""
    config = dataclasses.replace(MODEL_CONFIGS["vit_t"], image_size=256)
    model = randomize(build_from_config(config), seed=28)
    return model, save_checkpoint(model, tmp_path_factory.mktemp("web") / "vit_t_256.pt"), config


@pytest.fixture(scope="module")
def exported(small, tmp_path_factory):
    """(folder, first web.json, CLI output, export_model's paths): exported by the CLI, damaged, re-exported in place."""
    model, checkpoint, config = small
    out = tmp_path_factory.mktemp("web") / "site"
    # The CLI reads the checkpoint as the registry's vit_t, so vit_t is the 256 px config for this call only.
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(MODEL_CONFIGS, "vit_t", config)
        result = CliRunner().invoke(app, ["export", "-m", str(checkpoint), "--format", "web", "-o", str(out)])
    assert result.exit_code == 0, result.output
    first = json.loads((out / "web.json").read_text())
    # A damaged page file and graph, which the next export must replace.
    (out / "static" / "app.js").write_text("broken")
    (out / "models" / "decoder.onnx").write_bytes(b"broken")
    paths = export_model(model, out, format="web", model_name="vit_t", weights=checkpoint)
    return out, first, result.output, paths


def _files(folder):
    return sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file())


def test_the_folder_holds_the_page_its_files_and_the_models(exported):
    out, first, output, paths = exported
    page = served_page_dir()
    static = [f"static/{name}" for name in _files(page) if name != "index.html"]
    assert {"static/app.js", "static/style.css", f"static/{VENDOR_DIR}/ort.wasm.min.js"} <= set(static)
    # No temporaries are left, and nothing else.
    assert _files(out) == sorted(["index.html", "web.json", *MODELS, *static])
    assert paths == {
        "page": out / "index.html",
        "encoder": out / "models/encoder.onnx",
        "encoder_int8": out / "models/encoder.int8.onnx",
        "decoder": out / "models/decoder.onnx",
        "metadata": out / "web.json",
    }
    # `SAM.export` returns the first path's folder: the page's, the export folder.
    assert next(iter(paths.values())).parent == out
    for role in paths:
        assert role in output
    assert first["files"].keys() == json.loads(paths["metadata"].read_text())["files"].keys()


def test_web_json_describes_the_model_and_hashes_every_file(exported, small):
    out, _, _, _ = exported
    model = small[0]
    web = json.loads((out / "web.json").read_text())
    version = json.loads((served_page_dir() / VENDOR_DIR / "VERSION.json").read_text())["version"]
    assert {key: value for key, value in web.items() if key != "files"} == {
        "format": "web",
        "model": "vit_t",
        "image_size": 256,
        "pixel_mean": model.pixel_mean.flatten().tolist(),
        "pixel_std": model.pixel_std.flatten().tolist(),
        "mask_threshold": 0.0,
        "encoders": {"fp32": "models/encoder.onnx", "int8": "models/encoder.int8.onnx"},
        "decoder": "models/decoder.onnx",
        "onnxruntime_web": version,
    }
    assert sorted(web["files"]) == [name for name in _files(out) if name != "web.json"]
    for name, digest in web["files"].items():
        assert sha256_file(out / name) == digest, name
    # The re-export replaced the files the fixture damaged.
    assert (out / "static/app.js").read_bytes() == (served_page_dir() / "app.js").read_bytes()
    metadata = json.loads((out / "models/metadata.json").read_text())
    assert metadata["weights"]["sha256"] == sha256_file(small[1]) and metadata["quantize"] == ["int8"]


def test_the_page_is_marked_static(exported):
    out = exported[0]
    template = (served_page_dir() / "index.html").read_text()
    page = (out / "index.html").read_text()
    assert '<meta name="mobilesam-page" content="static">' in page and 'content="served"' not in page
    assert page == template.replace('content="served"', 'content="static"')


def test_the_models_reproduce_the_torch_masks(exported, small):
    out, model = exported[0], small[0]
    h, w = 192, 256
    image = demo_image(h, w)
    reference, exported_predictor = SamPredictor(model, backend="torch"), OnnxPredictor(out / "models", threads=2)
    reference.set_image(image)
    exported_predictor.set_image(image)
    expected, measured = [], []
    for prompt in demo_prompts(h, w):
        expected.extend(reference.predict(**prompt)[0])
        measured.extend(exported_predictor.predict(**prompt)[0])
    agreement = compare_masks(expected, measured)
    assert len(expected) == 12 and agreement.min_iou >= FAITHFUL.min_iou, agreement


def test_a_reduced_precision_encoder_is_refused(small, tmp_path):
    model, checkpoint, _ = small
    with pytest.raises(ValueError, match="the web format has no 'fp16' encoder; its quantize options: none"):
        export_model(model, tmp_path / "a", format="web", model_name="vit_t", quantize="fp16")
    with pytest.raises(
        ValueError, match=r"the web format has no 'int8' encoder to add; its quantize options: none \(it writes fp32 and int8\)"
    ):
        export_web(model, tmp_path / "b", model_name="vit_t", quantize="int8")
    result = CliRunner().invoke(
        app, ["export", "-m", str(checkpoint), "-f", "web", "-o", str(tmp_path / "c"), "--quantize", "fp16"]
    )
    assert result.exit_code == 2 and "--quantize for --format web is not taken, got 'fp16'" in result.output
    with pytest.raises(ValueError, match="the web format has no 'int8' encoder"):
        SAM("vit_t", backend="torch").export(format="web", int8=True, out=tmp_path / "d")
    assert not any(tmp_path.iterdir())


@pytest.fixture()
def page_copy(tmp_path):
    page = tmp_path / "page"
    shutil.copytree(served_page_dir(), page)
    return page


def test_a_damaged_vendor_file_is_refused_before_anything_is_written(small, page_copy, tmp_path):
    model = small[0]
    wasm = page_copy / VENDOR_DIR / "ort-wasm-simd-threaded.wasm"
    data = bytearray(wasm.read_bytes())
    data[len(data) // 2] ^= 1
    wasm.write_bytes(bytes(data))
    with pytest.raises(RuntimeError, match=f"file {wasm} is damaged: its SHA-256 is not VERSION.json's"):
        export_web(model, tmp_path / "out", model_name="vit_t", page_dir=page_copy)
    wasm.unlink()
    with pytest.raises(RuntimeError, match=f"file {wasm} is missing"):
        export_web(model, tmp_path / "out", model_name="vit_t", page_dir=page_copy)
    assert not (tmp_path / "out").exists()


def test_a_page_without_its_mode_tag_is_refused(small, page_copy, tmp_path):
    index = page_copy / "index.html"
    index.write_text(index.read_text().replace('<meta name="mobilesam-page" content="served">', ""))
    with pytest.raises(RuntimeError, match=r'must hold one <meta name="mobilesam-page" content="served"> tag.*it holds 0'):
        export_web(small[0], tmp_path / "out", model_name="vit_t", page_dir=page_copy)
    assert not (tmp_path / "out").exists()
