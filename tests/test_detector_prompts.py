"""Object-aware prompts: detector or boxes-file boxes through SAM (mobilesam.detect), and `auto_annotate`.

The detector is Ultralytics' own YOLO at random weights, built from its YAML offline;
Ultralytics runs from its cached --no-deps install (its opencv-python would clash with ours).
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from clients import import_ultralytics, installed_client
from images import generated_image
from mobilesam import build_sam
from mobilesam.cli import app
from mobilesam.detect import Detections, Detector, DetectorOptions, boxes_for_image, read_boxes_file, segment_detections
from mobilesam.io.yolo import yolo_seg_lines
from mobilesam.predictor import SamPredictor
from mobilesam.prompts import make_prompt
from mobilesam.registry import build_from_config, get_config
from mobilesam.results import Results
from mobilesam.segment import segment_prompts
from mobilesam.tasks import BoxTask
from mobilesam.weights import save_checkpoint
from reference import randomize

# A random YOLO finds nothing at its usual confidence: these make it give a few boxes, fast.
FEW_BOXES = DetectorOptions(conf=0.0, imgsz=160, max_det=4, device="cpu")


@pytest.fixture
def yolo(tmp_path, monkeypatch):
    """Ultralytics' YOLO class, importable for this test."""
    return import_ultralytics(monkeypatch, tmp_path / "ultralytics-settings").YOLO


@pytest.fixture(scope="module")
def small_sam():
    torch.manual_seed(0)
    return randomize(build_from_config(dataclasses.replace(get_config("vit_t"), image_size=256)), seed=1)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_checkpoint(randomize(build_sam("vit_t"), seed=3), tmp_path_factory.mktemp("weights") / "random_vit_t.pt")


def test_detector_boxes_are_decoded_as_segment_prompts_decodes_them(yolo, small_sam):
    image = generated_image(96, 128, seed=2)
    detections = Detector("yolo11n.yaml", FEW_BOXES)(image)
    assert detections.boxes.shape == (4, 4) and detections.classes.shape == (4,)
    assert len(detections.names) == 80
    predictor = SamPredictor(small_sam, "torch")
    embedding = predictor.embed(image)

    ours = segment_detections(predictor, embedding, detections, image, box_nms_thresh=None, path="x.png")
    prompts = [make_prompt(box=box) for box in detections.boxes]
    direct = segment_prompts(predictor, embedding, prompts, image, path="x.png")
    order = np.argsort(-direct.scores, kind="stable")
    assert len(ours) == len(detections.boxes)  # one mask per box before NMS
    np.testing.assert_array_equal(np.asarray(ours.masks), np.asarray(direct.masks)[order])
    np.testing.assert_array_equal(ours.scores, direct.scores[order])
    np.testing.assert_array_equal(ours.classes, detections.classes[order])
    np.testing.assert_array_equal(np.asarray(ours.boxes.cls), detections.classes[order])
    assert ours.names == detections.names

    deduplicated = segment_detections(predictor, embedding, detections, image, box_nms_thresh=0.7)
    assert 1 <= len(deduplicated) <= len(ours)
    assert np.all(np.diff(deduplicated.scores) <= 0)


def test_box_task_pickles_and_builds_its_detector_in_the_segmenter(yolo, small_sam):
    task = pickle.loads(pickle.dumps(BoxTask(detector="yolo11n.yaml", detector_options=FEW_BOXES, box_nms_thresh=None)))
    image = generated_image(64, 80, seed=4)
    result = task.segmenter(small_sam, SamPredictor(small_sam, "torch").backend)(image, None, "a.png")
    assert len(result) == 4 and result.classes is not None


def test_detector_without_ultralytics_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ultralytics", None)
    with pytest.raises(ImportError, match=r"mobilesam\[detector\]"):
        Detector("yolo11n.yaml")


def test_boxes_file_keys_and_classes(tmp_path):
    path = tmp_path / "boxes.json"
    path.write_text(json.dumps({"dog.jpg": [{"box": [1, 2, 30, 40], "class": 5}], "sub/cat": []}))
    table = read_boxes_file(path)
    assert boxes_for_image(table, "/data/photos/dog.jpg").classes.tolist() == [5]
    empty = boxes_for_image(table, "/data/sub/cat.png")
    assert empty.boxes.shape == (0, 4) and empty.classes.shape == (0,)
    with pytest.raises(ValueError, match="no entry for"):
        boxes_for_image(table, "/data/other/cat.png")


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ([[0, 0, 1, 1]], "expected an object"),
        ({"a": [[0, 0, 1]]}, r"\[x1, y1, x2, y2\]"),
        ({"a": [{"box": [0, 0, 1, 1], "class": -1}]}, "integer >= 0"),
        ({"a": [{"box": [0, 0, 1, 1], "class": 1}, [0, 0, 2, 2]]}, "every box or for none"),
        ({"a": [{"box": [0, 0, 1, 1], "label": 1}]}, "keys 'box'"),
    ],
)
def test_bad_boxes_file_is_one_clear_error(tmp_path, content, problem):
    path = tmp_path / "boxes.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ValueError, match=problem):
        read_boxes_file(path)


def test_everything_with_a_boxes_file_writes_the_boxes_classes(checkpoint, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(generated_image(80, 120, seed=1)).save(photos / "scene.png")
    boxes = {"scene": [{"box": [5, 5, 60, 50], "class": 3}, {"box": [70, 20, 115, 75], "class": 7}]}
    (tmp_path / "boxes.json").write_text(json.dumps(boxes))
    out = tmp_path / "out"
    args = ["everything", str(photos), "--boxes", str(tmp_path / "boxes.json"), "--model", str(checkpoint)]
    options = ["--format", "png,yolo", "--out", str(out), "--quiet", "--box-nms-thresh", "1.0", "--backend", "torch"]
    result = CliRunner().invoke(app, [*args, *options])
    assert result.exit_code == 0, result.output
    assert len(list((out / "masks" / "scene").glob("*.png"))) == 2  # one mask per box
    # Random SAM weights give speckled masks without outlines, so the label file may be empty.
    lines = (out / "labels" / "scene.txt").read_text().splitlines()
    assert {int(line.split()[0]) for line in lines} <= {3, 7}

    both = CliRunner().invoke(app, [*args, "--detector", "yolo11n.yaml", "--out", str(out)])
    assert both.exit_code == 2 and "not both" in both.output


def test_auto_annotate_labels_with_the_detectors_classes_and_resumes(yolo, checkpoint, tmp_path):
    from mobilesam import auto_annotate

    data = tmp_path / "images"
    data.mkdir()
    Image.fromarray(generated_image(72, 96, seed=5)).save(data / "one.png")
    yolo("yolo11n.yaml").save(tmp_path / "det.pt")
    expected = Detector(tmp_path / "det.pt", dataclasses.replace(FEW_BOXES, iou=0.45, max_det=3))(generated_image(72, 96, seed=5))

    def run():
        return auto_annotate(
            data, det_model=tmp_path / "det.pt", sam_model=checkpoint, device="cpu", conf=0.0, imgsz=160, max_det=3
        )

    first = run()
    assert (first.written, first.skipped) == (1, 0)
    label = tmp_path / "images_auto_annotate_labels" / "labels" / "one.txt"
    rows = [line.split() for line in label.read_text().splitlines()]
    assert len(rows) <= 3  # random SAM masks may be speckle without an outline
    # One line per detection whose mask has an outline, starting with that detection's class.
    assert Counter(int(row[0]) for row in rows) <= Counter(expected.classes.tolist())
    assert all(len(row) % 2 == 1 and 0 <= float(v) <= 1 for row in rows for v in row[1:])
    second = run()
    assert (second.written, second.skipped) == (0, 1)


def test_ultralytics_docs_example_runs_with_only_the_import_changed(yolo, checkpoint, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("ultralytics/assets").mkdir(parents=True)
    Image.fromarray(generated_image(64, 64, seed=6)).save("ultralytics/assets/bus.jpg")
    yolo("yolo11n.yaml").save("yolo26n.pt")
    Path("mobile_sam.pt").write_bytes(checkpoint.read_bytes())

    # Ultralytics' docstring example, with `from ultralytics.data.annotator import auto_annotate` replaced.
    from mobilesam import auto_annotate

    auto_annotate(data="ultralytics/assets", det_model="yolo26n.pt", sam_model="mobile_sam.pt")

    # A random detector finds nothing at conf 0.25: the image is labeled empty, and done.
    assert Path("ultralytics/assets_auto_annotate_labels/labels/bus.txt").read_text() == ""


def test_yolo_labels_start_with_the_masks_classes():
    masks = np.zeros((2, 40, 50), bool)
    masks[0, 5:20, 5:20] = masks[1, 25:35, 30:45] = True
    result = Results(generated_image(40, 50), masks, np.array([0.9, 0.8], np.float32), classes=np.array([4, 11]))
    assert [line.split()[0] for line in yolo_seg_lines(result)] == ["4", "11"]
    assert [line.split()[0] for line in yolo_seg_lines(result, class_id=2)] == ["2", "2"]
    assert np.asarray(result[[1]].boxes.cls).tolist() == [11] and result.names == {4: "4", 11: "11"}


def test_detections_without_boxes_give_no_masks(small_sam):
    image = generated_image(40, 50)
    none = Detections(np.zeros((0, 4)), np.zeros(0, np.int64))
    result = segment_detections(SamPredictor(small_sam, "torch"), None, none, image)
    assert len(result) == 0 and result.classes.shape == (0,)


def test_the_detector_leaves_pillow_as_it_found_it(tmp_path, monkeypatch):
    # Importing Ultralytics swaps PIL.Image.open for one that installs pi-heif on an unreadable file;
    # the detector imports it afresh here and must put Pillow's own back.
    for name in [name for name in sys.modules if name == "ultralytics" or name.startswith("ultralytics.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(installed_client("ultralytics-8.4.190", ["ultralytics==8.4.190"], own_venv=False)))
    monkeypatch.setenv("YOLO_CONFIG_DIR", str(tmp_path))
    monkeypatch.setattr(torch, "save", torch.save)
    pillow_open = Image.open
    monkeypatch.setattr(Image, "open", pillow_open)
    Detector("yolo11n.yaml", DetectorOptions(imgsz=64))
    assert "ultralytics.utils.patches" in sys.modules and Image.open is pillow_open
