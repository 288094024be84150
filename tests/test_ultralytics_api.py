"""Ultralytics' `SAM.predict` keywords, sources and `Results` members, on `mobilesam.SAM`.

Ultralytics' own `tests/test_cli.py::test_mobilesam` (ultralytics 8.4.190, the
sdist on PyPI) runs pasted with only its import changed. Where ultralytics is
installed, `Results.summary`, `to_csv`, `verbose`, `save_txt` and `save_crop` are
compared with its own `Results` on the same masks.
"""

from __future__ import annotations

import importlib
import shutil
import types
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image, ImageShow

from clients import import_ultralytics
from images import generated_image
from mobilesam import SAM, ImageTooLarge, build_sam
from mobilesam.results import Results
from mobilesam.weights import save_checkpoint
from reference import randomize

# ultralytics 8.4.190 tests/test_cli.py, test_mobilesam, pasted; only the import line differs when it runs.
# Left out: its two lines that call the private `model.predictor._prepare_prompts` of Ultralytics'
# own Predictor class (its mask-prompt internals), which mobilesam.SAM does not have.
TEST_MOBILESAM = '''
def test_mobilesam() -> None:
    """Test MobileSAM segmentation with point and box prompts using Ultralytics."""
    import numpy as np

    from ultralytics import SAM

    # Load the model
    model = SAM(WEIGHTS_DIR / "mobile_sam.pt")

    # Source
    source = ASSETS / "zidane.jpg"

    # Predict a segment based on a 1D point prompt and 1D labels.
    model.predict(source, points=[900, 370], labels=[1])

    # Predict a segment based on 3D points and 2D labels (multiple points per object).
    model.predict(source, points=[[[900, 370], [1000, 100]]], labels=[[1, 1]])

    # Predict a segment based on a box prompt
    model.predict(source, bboxes=[439, 437, 524, 709], save=True)

    # A box prompt applies to every image of a directory source, not only the first
    assert [len(r.masks) for r in model(ASSETS, bboxes=[439, 437, 524, 709])] == [1, 1]

    # Predict all
    # model(source)
'''


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "mobile_sam.pt"
    return save_checkpoint(randomize(build_sam("vit_t"), seed=3), path)


@pytest.fixture(scope="module")
def model(checkpoint):
    return SAM(checkpoint, backend="torch")


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "zidane.jpg"
    Image.fromarray(generated_image(720, 1280, seed=7)).save(path, quality=95)
    return path


@pytest.mark.slow
def test_ultralytics_test_mobilesam_runs(tmp_path, monkeypatch, checkpoint):
    assets, weights = tmp_path / "assets", tmp_path / "weights"
    assets.mkdir(), weights.mkdir()
    shutil.copyfile(checkpoint, weights / "mobile_sam.pt")
    Image.fromarray(generated_image(720, 1280, seed=7)).save(assets / "zidane.jpg", quality=95)
    Image.fromarray(generated_image(1080, 810, seed=8)).save(assets / "bus.jpg", quality=95)
    monkeypatch.chdir(tmp_path)
    namespace = {"ASSETS": assets, "WEIGHTS_DIR": weights}
    code = TEST_MOBILESAM.replace("from ultralytics import SAM\n", "from mobilesam import SAM\n")
    exec(compile(code, "<ultralytics tests/test_cli.py>", "exec"), namespace)
    namespace["test_mobilesam"]()
    saved = tmp_path / "runs" / "segment" / "predict" / "zidane.jpg"
    assert Image.open(saved).size == (1280, 720)


def test_keywords_applied(model, photo, tmp_path, capsys):
    everything = model.predict(photo, points=[[400, 370], [900, 370]], labels=[1, 1])[0]
    threshold = float(np.sort(everything.scores)[0])  # drops the lower-scoring mask
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # none of these may warn
        result = model.predict(
            photo,
            points=[[400, 370], [900, 370]],
            labels=[1, 1],
            conf=threshold,
            device="cpu",
            imgsz=1024,
            retina_masks=True,
            verbose=True,
            save=True,
            save_txt=True,
            save_conf=True,
            save_crop=True,
            project=str(tmp_path / "out"),
            name="run",
            batch=1,
            quantize=32,
        )[0]
    assert len(result) == 1 and result.scores[0] > threshold
    assert np.array_equal(np.asarray(result.masks), np.asarray(everything.masks)[everything.scores > threshold])
    assert result.boxes.cls.tolist() == [float(np.argmax(everything.scores))] and result.names == {0: "0", 1: "1"}
    run = tmp_path / "out" / "run"
    assert result.save_dir == str(run)
    assert Image.open(run / "zidane.jpg").size == (1280, 720)
    label_line = (run / "labels" / "zidane.txt").read_text().split()
    assert label_line[0] == str(int(result.boxes.cls[0])) and float(label_line[-1]) == pytest.approx(result.scores[0], 1e-5)
    assert list((run / "crops").glob("*/zidane.jpg"))
    out = capsys.readouterr().out
    assert "zidane.jpg 720x1280 1 " in out and "ms preprocess" in out and "Results saved to" in out
    assert set(result.speed) == {"preprocess", "inference", "postprocess"} and all(v >= 0 for v in result.speed.values())
    # A second run goes to run-2, as Ultralytics increments its folders.
    model.predict(photo, points=[30, 30], save=True, project=str(tmp_path / "out"), name="run")
    assert (tmp_path / "out" / "run-2" / "zidane.jpg").is_file()


def test_keywords_that_mean_nothing_warn_once_and_unknown_ones_fail(model, photo):
    with pytest.warns(UserWarning) as caught:
        for _ in range(2):
            model.predict(photo, points=[30, 30], imgsz=640, augment=True, classes=[0], iou=0.5)
    messages = sorted({str(w.message).split(" is accepted")[0] for w in caught})
    assert messages == ["augment", "classes", "imgsz", "iou"]
    with pytest.raises(TypeError, match="not_an_option"):
        model.predict(photo, points=[30, 30], not_an_option=1)
    with pytest.raises(ValueError, match="task"):
        model.predict(photo, points=[30, 30], task="detect")


def test_stream_positional_and_no_source(model, photo):
    image = np.asarray(Image.open(photo))
    stream = model.predict([image, photo], True, [400, 300, 900, 600])
    assert isinstance(stream, types.GeneratorType)
    first, second = list(stream)
    assert first.path is None and second.path == str(photo) and len(first) == len(second) == 1
    again = model(bboxes=[400, 300, 900, 600])[0]  # no source: the last image read
    assert again.path == str(photo) and np.array_equal(np.asarray(again.masks), np.asarray(second.masks))


@pytest.mark.slow
def test_folder_glob_and_video_sources(model, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for seed in (1, 2):
        Image.fromarray(generated_image(64, 96, seed=seed)).save(folder / f"p{seed}.png")
    assert [Path(r.path).name for r in model(folder, points=[20, 20])] == ["p1.png", "p2.png"]
    assert [Path(r.path).name for r in model(str(folder / "*.png"), points=[20, 20])] == ["p1.png", "p2.png"]

    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (96, 64))
    for index in range(3):
        frame = np.zeros((64, 96, 3), np.uint8)
        frame[:, :, 2] = 200 + index  # red in OpenCV's BGR
        writer.write(frame)
    writer.release()
    results = model.predict(video, points=[20, 20], vid_stride=2, save=True, project=str(tmp_path / "runs"))
    assert len(results) == 2 and all(r.path == str(video) for r in results)
    red, green, blue = results[0].orig_img.reshape(-1, 3).mean(axis=0)
    assert red > 150 and green < 30 and blue < 30  # frames arrive as RGB
    saved = tmp_path / "runs" / "predict" / "clip.avi"
    assert cv2.VideoCapture(str(saved)).get(cv2.CAP_PROP_FRAME_COUNT) == 2
    with pytest.raises(ImageTooLarge):
        model.predict(video, points=[20, 20], max_pixels=100)


def test_model_members(model, capsys):
    assert model.task == "segment" and model.device == torch.device("cpu")
    assert model.eval() is model and model.cpu() is model and model.to(torch.device("cpu")) is model
    counts = model.info(detailed=True)
    out = capsys.readouterr().out
    assert counts["total"] > 0 and "image_encoder." in out and "mean" in out


def make_result() -> Results:
    masks = np.zeros((3, 40, 60), dtype=bool)
    masks[0, 10:20, 20:40] = True
    masks[1, 2:12, 2:14] = True
    masks[2, 25:38, 5:21] = True
    image = np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8)
    return Results(orig_img=image, masks=masks, scores=np.array([0.9, 0.8, 0.7], np.float32), path="a/photo.jpg")


def test_results_members(tmp_path, monkeypatch):
    result = make_result()
    assert result.names == {0: "0", 1: "1", 2: "2"} and result.speed == dict.fromkeys(result.speed) and result.save_dir is None
    one = result[1]
    assert isinstance(one, Results) and one.masks.shape == (1, 40, 60) and one.boxes.cls.tolist() == [1.0]
    assert one.verbose() == "1 1, " and result.verbose() == "1 0, 1 1, 1 2, " and result[[]].verbose() == "(no detections), "
    assert [len(r) for r in result] == [1, 1, 1]
    moved = result.to(torch.float64)
    assert moved.boxes.xyxy.dtype == torch.float64 and moved.masks.data.dtype == torch.float64
    assert result.to("cpu").masks.data.device == torch.device("cpu")

    monkeypatch.chdir(tmp_path)
    assert result.save() == Path("results_photo.jpg") and Image.open("results_photo.jpg").size == (60, 40)
    with pytest.warns(UserWarning, match="labels"):
        result.plot(labels=True)
    with pytest.raises(TypeError, match="bogus"):
        result.plot(bogus=True)
    assert isinstance(result.plot(pil=True), Image.Image)

    shown = []

    class Recorder(ImageShow.Viewer):
        def show(self, image, **options):
            shown.append(image.size)
            return 1

    ImageShow.register(Recorder, order=-1)
    try:
        result.show()
    finally:
        ImageShow._viewers.pop(0)
    assert shown == [(60, 40)]


def test_results_exports_match_ultralytics(tmp_path, monkeypatch):
    import_ultralytics(monkeypatch, tmp_path / "ultralytics")
    ultralytics_results = importlib.import_module("ultralytics.engine.results")
    # One part per mask: Masks.xy joins a mask's parts in another order than Ultralytics' does.
    ours = make_result()
    boxes = torch.from_numpy(np.asarray(ours.boxes.data))
    theirs = ultralytics_results.Results(
        ours.orig_img[:, :, ::-1].copy(), ours.path, ours.names, boxes=boxes, masks=torch.from_numpy(np.asarray(ours.masks))
    )
    assert ours.summary() == theirs.summary() and ours.summary(normalize=True) == theirs.summary(normalize=True)
    assert ours.to_csv() == theirs.to_csv()
    assert ours.verbose() == theirs.verbose()
    assert ours.to_df().equals(theirs.to_df())
    ours.save_txt(tmp_path / "ours.txt", save_conf=True)
    theirs.save_txt(tmp_path / "theirs.txt", save_conf=True)
    assert (tmp_path / "ours.txt").read_text() == (tmp_path / "theirs.txt").read_text()
    ours.save_crop(tmp_path / "ours")
    theirs.save_crop(tmp_path / "theirs")
    for name in ("0", "1", "2"):
        ours_crop = np.asarray(Image.open(tmp_path / "ours" / name / "im.jpg"))
        theirs_crop = np.asarray(Image.open(tmp_path / "theirs" / name / "im.jpg"))
        assert ours_crop.shape == theirs_crop.shape and np.abs(ours_crop.astype(int) - theirs_crop).max() <= 2
