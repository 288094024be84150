"""`mobilesam val` and `mobilesam.val.evaluate` on a small generated COCO dataset, as a user runs them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from typer.testing import CliRunner

from images import sample_images
from mobilesam import SamPredictor, build_sam, load_sam
from mobilesam.cli import app
from mobilesam.masks import mask_iou
from mobilesam.val import ValReport, evaluate
from mobilesam.val.plot import plot_clicks
from mobilesam.weights import save_checkpoint
from reference import randomize

runner = CliRunner()
CATEGORIES = [{"id": 1, "name": "rectangle"}, {"id": 2, "name": "triangle"}, {"id": 3, "name": "disc"}]
COLOURS = {1: (230, 40, 40), 2: (40, 40, 230), 3: (40, 230, 40)}


def _disc(h: int, w: int, cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 < r**2


def _rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """Shapes painted on real photos, annotated as polygons and RLE (pycocotools), plus a crowd
    annotation and an image whose file is missing; returns the COCO file (images in images/)."""
    root = tmp_path_factory.mktemp("coco")
    (root / "images").mkdir()
    document = {"images": [], "annotations": [], "categories": CATEGORIES}
    backgrounds = {"astronaut.png": sample_images()["astronaut"][::2, ::2], "coffee.png": sample_images()["coffee"][::2, ::2]}
    for image_id, (file_name, background) in enumerate(backgrounds.items(), start=1):
        image = background.copy()
        h, w = image.shape[:2]
        shapes = [
            (1, [[20, 20, 130, 20, 130, 115, 20, 115]]),  # large rectangle, polygon
            (2, [[150, 30, 210, 95, 160, 100]]),  # medium triangle, polygon
            (3, _rle(_disc(h, w, 150, 200, 12))),  # small disc, RLE
        ]
        for category_id, segmentation in shapes:
            if isinstance(segmentation, list):
                mask = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(segmentation, h, w))).astype(bool)
            else:
                mask = mask_utils.decode({**segmentation, "counts": segmentation["counts"].encode()}).astype(bool)
            image[mask] = COLOURS[category_id]
            document["annotations"].append(
                {
                    "id": len(document["annotations"]) + 1,
                    "image_id": image_id,
                    "category_id": category_id,
                    "segmentation": segmentation,
                    "iscrowd": 0,
                }
            )
        Image.fromarray(image).save(root / "images" / file_name)
        document["images"].append({"id": image_id, "file_name": file_name, "height": h, "width": w})
    document["annotations"].append(
        {"id": 99, "image_id": 1, "category_id": 3, "segmentation": _rle(_disc(256, 256, 200, 60, 20)), "iscrowd": 1}
    )
    document["images"].append({"id": 3, "file_name": "missing.png", "height": 64, "width": 64})
    document["annotations"].append({"id": 100, "image_id": 3, "category_id": 1, "segmentation": [[1, 1, 30, 1, 30, 30, 1, 30]]})
    path = root / "instances.json"
    path.write_text(json.dumps(document))
    return path


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("weights")
    student = save_checkpoint(randomize(build_sam("vit_t"), seed=3), folder / "student.pt")
    teacher = save_checkpoint(randomize(build_sam("vit_t"), seed=4), folder / "teacher.pt")
    return student, teacher


def test_cli_val_with_a_teacher_writes_report_and_plot(dataset, checkpoints, tmp_path):
    student, teacher = checkpoints
    out = tmp_path / "val" / "report.json"
    result = runner.invoke(
        app,
        [
            "val", "--model", str(student), "--teacher", str(teacher), "--data", str(dataset), "--images", str(dataset.parent / "images"),
            "--prompt", "box", "--prompt", "point,clicks:3", "--prompt", "everything", "--points-per-side", "2",
            "--pred-iou-thresh", "0", "--stability-score-thresh", "0", "--out", str(out),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    plot = tmp_path / "val" / "report_clicks.png"
    assert sorted(p.name for p in out.parent.iterdir()) == ["report.json", "report_clicks.png"]
    with Image.open(plot) as image:
        assert image.format == "PNG" and image.size == (600, 400)

    report = json.loads(out.read_text())
    assert report["model"] == str(student) and report["teacher"] == str(teacher)
    assert (report["images"], report["instances"], report["skipped_crowd"], report["skipped_empty"]) == (2, 6, 1, 0)
    [skipped] = report["skipped_images"]
    assert skipped["image"].endswith("missing.png") and "image file not found" in skipped["reason"]
    assert list(report["protocols"]) == ["box", "point", "clicks:3", "everything"]
    for protocol in report["protocols"].values():
        assert protocol["count"] == 6
        assert set(protocol["per_category"]) == {"rectangle", "triangle", "disc"}
        assert protocol["size_counts"] == {"small": 2, "medium": 2, "large": 2}
        assert 0.0 <= protocol["miou"] <= 1.0 and 0.0 <= protocol["teacher_miou"] <= 1.0
        expected_mean = np.mean([protocol["per_size"][s] for s in ("small", "medium", "large")])  # two of each size
        assert protocol["miou"] == pytest.approx(expected_mean)
        assert protocol["calibration"]["count"] == 6 and protocol["calibration"]["mean_actual_iou"] == pytest.approx(
            protocol["miou"]
        )
    clicks = report["protocols"]["clicks:3"]
    assert len(clicks["per_click"]) == 3 and len(clicks["teacher_per_click"]) == 3
    assert clicks["per_click"][-1] == clicks["miou"]
    # The first click of clicks:K is the point protocol.
    assert clicks["per_click"][0] == pytest.approx(report["protocols"]["point"]["miou"])
    assert clicks["teacher_per_click"][0] == pytest.approx(report["protocols"]["point"]["teacher_miou"])
    assert report["protocols"]["everything"]["miou"] > 0  # thresholds at 0 keep masks to match
    assert report["points_per_side"] == 2

    lines = result.output.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("protocol"))
    assert lines[header].split() == ["protocol", "instances", "mIoU", "small", "medium", "large", "teacher"]
    assert [line.split()[0] for line in lines[header + 1 : header + 5]] == ["box", "point", "clicks:3", "everything"]
    assert f"{report['protocols']['box']['miou']:.3f}" in lines[header + 1]
    assert "clicks:3 IoU after each click:" in result.output
    assert "2 images, 1 skipped, 6 objects" in result.output
    assert f"written: {out}, {plot}" in result.output
    assert f"skipped: {dataset.parent / 'images' / 'missing.png'}: image file not found" in result.output


def test_evaluate_from_python_agrees_with_a_hand_computation(dataset, checkpoints):
    student, _ = checkpoints
    model = load_sam(student)
    report = evaluate(model, dataset, dataset.parent / "images", ["box", "box:0.2", "clicks:2"], teacher=model, max_images=1)
    assert isinstance(report, ValReport)
    assert report.model == "vit_t (in memory)" and (report.images, report.instances) == (1, 3)
    assert report.skipped_images == [] and report.points_per_side is None

    # The box protocol by hand: the GT mask's pixel-edge box, one mask.
    annotations = json.loads(dataset.read_text())["annotations"]
    predictor = SamPredictor(model)
    image = np.asarray(Image.open(dataset.parent / "images" / "astronaut.png").convert("RGB"))
    predictor.set_image(image)
    ious = []
    for annotation in [a for a in annotations if a["image_id"] == 1 and not a["iscrowd"]]:
        segmentation = annotation["segmentation"]
        if isinstance(segmentation, list):
            gt = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(segmentation, 256, 256))).astype(bool)
        else:
            gt = mask_utils.decode({**segmentation, "counts": segmentation["counts"].encode()}).astype(bool)
        rows, cols = np.nonzero(gt)
        masks, _, _ = predictor.predict(
            box=np.array([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]), multimask_output=False
        )
        ious.append(mask_iou(masks[0], gt))
    assert report.protocols["box"].miou == pytest.approx(np.mean(ious), abs=1e-12)
    assert report.protocols["box:0.2"].miou != report.protocols["box"].miou
    # Scored against itself, a model agrees with itself exactly.
    for result in report.protocols.values():
        assert result.teacher_miou == 1.0
    assert report.protocols["clicks:2"].teacher_per_click == [1.0, 1.0]
    assert "box:0.2" in report.table() and "clicks:2 IoU after each click:" in report.table()


def test_cli_val_rejects_bad_input_in_one_line(dataset, tmp_path):
    images = str(dataset.parent / "images")
    base = ["val", "--model", "vit_t", "--data", str(dataset), "--images", images, "--out", str(tmp_path / "r.json")]
    for extra, code, message in [
        (["--prompt", "clicks:0"], 2, "error: clicks:K needs a whole number of clicks K >= 1 (e.g. clicks:5), got 'clicks:0'"),
        (["--prompt", "foo"], 2, "error: unknown protocol 'foo'; choose from box, box:JITTER, point, clicks:K, everything"),
        (["--out", str(tmp_path / "report.txt")], 2, "error: --out names the JSON report and must end in .json"),
        (["--images", str(tmp_path / "nowhere")], 1, f"error: images folder not found: {tmp_path / 'nowhere'}"),
        (["--data", str(tmp_path / "none.json")], 1, "error: dataset not found"),
        (["--images", str(tmp_path)], 1, "error: none of the 3 annotated images exists"),
    ]:
        result = runner.invoke(app, [*base, *extra])
        assert result.exit_code == code, result.output
        assert result.output.strip().splitlines() == [result.output.strip()] and result.output.startswith(message), result.output
    assert not (tmp_path / "r.json").exists()


def test_plot_without_matplotlib_names_the_extra(monkeypatch, tmp_path):
    report = ValReport("m.pt", None, "d.json", "coco", 1, 1, {}, 0, None, [], 0, 0, 0.0)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r"pip install 'mobilesam\[val\]'"):
        plot_clicks(report, tmp_path / "plot.png")
    assert not (tmp_path / "plot.png").exists()
