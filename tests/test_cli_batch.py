"""`mobilesam predict` and `mobilesam everything` over folders, as a user runs them."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO
from typer.testing import CliRunner

from images import generated_image, sample_images
from mobilesam import SAM, build_sam
from mobilesam.cli import app
from mobilesam.registry import MODEL_CONFIGS
from mobilesam.weights import save_checkpoint
from reference import randomize

runner = CliRunner()
ALL_FORMATS = ["--format", "png,overlay,coco", "--format", "yolo", "--format", "labelme"]
POINT = (60, 40)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_checkpoint(randomize(build_sam("vit_t"), seed=3), tmp_path_factory.mktemp("weights") / "random_vit_t.pt")


@pytest.fixture
def photos(tmp_path) -> Path:
    """Two real photos (one in a subfolder, one JPEG) and a generated image."""
    root = tmp_path / "photos"
    (root / "cats").mkdir(parents=True)
    Image.fromarray(sample_images()["astronaut"][::4, ::4]).save(root / "astronaut.png")
    Image.fromarray(sample_images()["chelsea"][::3, ::3]).save(root / "cats" / "chelsea.jpg", quality=95)
    Image.fromarray(generated_image()).save(root / "generated.png")
    return root


def _expected_files(stems: list[str], masks_per_image: int = 1) -> set[str]:
    files = {"coco.json"}
    for stem in stems:
        files |= {f"overlays/{stem}.jpg", f"coco/{stem}.json", f"labels/{stem}.txt", f"labelme/{stem}.json"}
        files |= {f"masks/{stem}/{i:03d}.png" for i in range(masks_per_image)}
    return files


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def _png_mask(path: Path) -> np.ndarray:
    array = np.asarray(Image.open(path))
    assert set(np.unique(array)) <= {0, 255}
    return array == 255


def test_predict_writes_every_format_for_a_folder(checkpoint, photos, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        [
            "predict",
            str(photos),
            "--model",
            str(checkpoint),
            "--point",
            f"{POINT[0]},{POINT[1]}",
            "--out",
            str(out),
            *ALL_FORMATS,
        ],
    )
    assert result.exit_code == 0, result.output
    stems = ["astronaut", "cats/chelsea", "generated"]
    assert _files(out) == _expected_files(stems)
    assert "3 images: 3 written, 0 already done, 0 failed; 3 masks" in result.output

    # The masks are the library's masks for the same prompt.
    [expected] = SAM(checkpoint).predict(photos / "cats" / "chelsea.jpg", points=list(POINT), labels=[1])
    np.testing.assert_array_equal(_png_mask(out / "masks" / "cats" / "chelsea" / "000.png"), expected.masks[0])

    coco = COCO(str(out / "coco.json"))
    assert sorted(image["file_name"] for image in coco.dataset["images"]) == [
        "astronaut.png",
        "cats/chelsea.jpg",
        "generated.png",
    ]
    for image in coco.dataset["images"]:
        stem = image["file_name"].rsplit(".", 1)[0]
        [annotation] = coco.loadAnns(coco.getAnnIds(imgIds=image["id"]))
        np.testing.assert_array_equal(coco.annToMask(annotation).astype(bool), _png_mask(out / "masks" / stem / "000.png"))
        assert annotation["prompt"] == {"points": [list(map(float, POINT))], "labels": [1]}
        assert 0 <= annotation["score"] <= 2

    labelme = json.loads((out / "labelme" / "cats" / "chelsea.json").read_text())
    assert {"version", "flags", "shapes", "imagePath", "imageData", "imageHeight", "imageWidth"} <= set(labelme)
    assert (labelme["imageHeight"], labelme["imageWidth"]) == (100, 151)
    assert (out / "labelme" / "cats" / labelme["imagePath"]).resolve() == (photos / "cats" / "chelsea.jpg").resolve()
    assert all(shape["shape_type"] == "polygon" and len(shape["points"]) >= 3 for shape in labelme["shapes"])

    for stem in stems:
        for line in (out / "labels" / f"{stem}.txt").read_text().splitlines():
            class_id, *coords = line.split()
            assert class_id == "0" and len(coords) >= 6 and len(coords) % 2 == 0
            assert all(0.0 <= float(value) <= 1.0 for value in coords)

    overlay = Image.open(out / "overlays" / "astronaut.jpg")
    assert overlay.format == "JPEG" and overlay.size == (128, 128)


def test_rerun_skips_done_images_and_overwrite_redoes_them(checkpoint, photos, tmp_path):
    out = tmp_path / "out"
    (photos / "astronaut.png").unlink()
    args = ["predict", str(photos), "--model", str(checkpoint), "--box", "5,5,60,50", "--out", str(out), "--format", "png"]
    assert runner.invoke(app, args).exit_code == 0
    mask = out / "masks" / "generated" / "000.png"
    mtime = mask.stat().st_mtime_ns
    (out / "masks" / "cats" / "chelsea" / "000.png").unlink()
    os.rmdir(out / "masks" / "cats" / "chelsea")

    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "2 images: 1 written, 1 already done" in result.output
    assert mask.stat().st_mtime_ns == mtime
    assert (out / "masks" / "cats" / "chelsea" / "000.png").is_file()

    result = runner.invoke(app, [*args, "--overwrite", "--quiet"])
    assert result.exit_code == 0 and result.output == ""
    assert mask.stat().st_mtime_ns != mtime


def test_unreadable_image_is_reported_and_the_others_written(checkpoint, photos, tmp_path):
    (photos / "astronaut.png").unlink()
    (photos / "cats" / "chelsea.jpg").unlink()
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    out = tmp_path / "out"
    result = runner.invoke(app, ["predict", str(photos), "-m", str(checkpoint), "-p", "30,30", "-o", str(out), "-f", "overlay"])
    assert result.exit_code == 1
    assert "2 images: 1 written, 0 already done, 1 failed" in result.output
    assert f"failed: {photos / 'broken.jpg'}: cannot read image" in result.output
    assert _files(out) == {"overlays/generated.jpg"}


def test_prompts_file_gives_each_image_its_own_objects(checkpoint, photos, tmp_path):
    prompts = photos / "prompts.json"
    prompts.write_text(
        json.dumps(
            [
                {
                    "image": "astronaut.png",
                    "objects": [{"points": [[30, 30], [90, 90]], "labels": [1, 0]}, {"box": [10, 10, 100, 120]}],
                },
                {"image": "generated.png", "points": [[2000, 10]]},
            ]
        )
    )
    out = tmp_path / "out"
    result = runner.invoke(app, ["predict", str(prompts), "-m", str(checkpoint), "-o", str(out), "-f", "coco", "--multimask"])
    assert result.exit_code == 1, result.output
    assert "generated.png: point (2000, 10) lies far outside the 457x123 image" in result.output
    document = json.loads((out / "coco" / "astronaut.json").read_text())
    prompts_seen = [annotation["prompt"] for annotation in document["annotations"]]
    assert (
        prompts_seen
        == [{"points": [[30.0, 30.0], [90.0, 90.0]], "labels": [1, 0]}] * 3 + [{"box": [10.0, 10.0, 100.0, 120.0]}] * 3
    )


def test_everything_writes_the_generators_masks(checkpoint, photos, tmp_path):
    out = tmp_path / "out"
    options = ["--points-per-side", "3", "--pred-iou-thresh", "0.5", "--stability-score-thresh", "0.2", "--box-nms-thresh", "1.0"]
    result = runner.invoke(
        app, ["everything", str(photos / "generated.png"), "-m", str(checkpoint), "-o", str(out), "-f", "png,coco", *options]
    )
    assert result.exit_code == 0, result.output
    [expected] = SAM(checkpoint).predict(
        photos / "generated.png", points_per_side=3, pred_iou_thresh=0.5, stability_score_thresh=0.2, box_nms_thresh=1.0
    )
    assert len(expected) > 0
    written = sorted((out / "masks" / "generated").iterdir())
    assert len(written) == len(expected)
    for path, mask in zip(written, expected.masks):
        np.testing.assert_array_equal(_png_mask(path), mask)
    coco = COCO(str(out / "coco.json"))
    scores = [annotation["score"] for annotation in coco.dataset["annotations"]]
    np.testing.assert_allclose(scores, expected.scores, rtol=1e-6)


def test_predict_on_the_fast_backend_gives_the_same_masks(checkpoint, photos, tmp_path):
    image = photos / "cats" / "chelsea.jpg"
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        [
            "predict",
            str(image),
            "-m",
            str(checkpoint),
            "-p",
            f"{POINT[0]},{POINT[1]}",
            "-o",
            str(out),
            "-f",
            "png",
            "--backend",
            "torch-fast",
        ],
    )
    assert result.exit_code == 0, result.output
    [expected] = SAM(checkpoint).predict(image, points=list(POINT), labels=[1])
    # The fast encoder is within 1e-4 of eager torch: only a pixel at the threshold may flip.
    assert np.mean(_png_mask(out / "masks" / "chelsea" / "000.png") != expected.masks[0]) <= 1e-3


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        (["predict", "{photos}", "--point", "1,2,3,4"], 2, "--point must be X,Y or X,Y,LABEL"),
        (["predict", "{photos}", "--box", "1,2,3"], 2, "--box must be X1,Y1,X2,Y2"),
        (["predict", "{photos}", "--point", "nan,3"], 2, "--point must be X,Y or X,Y,LABEL"),
        (["predict", "{photos}", "-p", "1,2", "-b", "0,0,5,5", "-b", "1,1,6,6"], 2, "points with several boxes are ambiguous"),
        (["predict", "{photos}", "--point", "1,2,3"], 2, "--point/--box: point labels must be 1 (foreground) or 0 (background)"),
        (["predict", "{photos}", "-b", "0,0,5,5", "-b", "6,1,1,6"], 2, "--point/--box: box corners must satisfy x1 <= x2"),
        (["predict", "{photos}/prompts.json"], 1, "prompts.json: entry 0: point labels must be 1 (foreground) or 0"),
        (["predict", "{photos}"], 2, "predict needs --point or --box"),
        (["predict", "{photos}", "-p", "1,2", "--format", "tiff"], 2, "unknown output format 'tiff'"),
        (["predict", "{photos}/nothing", "-p", "1,2"], 1, "no such file or folder"),
        (["predict", "{photos}", "-p", "1,2", "--model", "vit_q"], 1, "unknown model 'vit_q'"),
        (["predict", "{photos}", "-p", "1,2", "--device", "cuda:7"], 1, "--device"),
        (["everything", "{photos}", "--box-nms-thresh", "1.5"], 2, "box_nms_thresh"),
        (["predict", "{photos}", "-p", "1,2", "--backend", "tensorrt"], 2, "--backend must be auto or one of torch, torch-fast"),
        (
            ["everything", "{photos}", "--backend", "torch-fast", "--onnx-dir", "{photos}"],
            2,
            "--onnx-dir is for the onnx/openvino",
        ),
        (
            ["predict", "{photos}", "-p", "1,2", "--backend", "onnx", "--onnx-dir", "{photos}"],
            1,
            "not a `mobilesam export` folder",
        ),
    ],
)
def test_bad_arguments_are_one_line(checkpoint, photos, tmp_path, args, status, message):
    (photos / "prompts.json").write_text(json.dumps([{"image": "generated.png", "points": [[10, 10]], "labels": [2]}]))
    args = [arg.replace("{photos}", str(photos)) for arg in args]
    if "--model" not in args:
        args += ["--model", str(checkpoint)]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "out")])
    assert result.exit_code == status, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert message in lines[0]
    assert not (tmp_path / "out").exists()


def test_missing_weights_offline_say_where_to_put_them(photos, tmp_path, monkeypatch):
    monkeypatch.setenv("MOBILESAM_HOME", str(tmp_path / "cache"))
    dead = "http://127.0.0.1:9/mobile_sam.pt"
    vit_t = MODEL_CONFIGS["vit_t"]
    offline = dataclasses.replace(vit_t, checkpoint=dataclasses.replace(vit_t.checkpoint, urls=(dead,)))
    monkeypatch.setitem(MODEL_CONFIGS, "vit_t", offline)
    result = runner.invoke(app, ["predict", str(photos), "-p", "1,2", "-o", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert str(tmp_path / "cache" / "mobile_sam.pt") in result.output
    assert len(result.output.strip().splitlines()) == 1


def _batch(checkpoint: Path, tmp_path: Path, count: int, height: int, width: int) -> tuple[list[str], Path, list[str]]:
    """`count` generated images, and the `mobilesam predict` command line that labels them in every format.

    Returns:
        The images' stems, the output folder, and the command.
    """
    photos = tmp_path / "photos"
    photos.mkdir()
    stems = [f"image_{i:02d}" for i in range(count)]
    for i, stem in enumerate(stems):
        Image.fromarray(generated_image(height, width, seed=i)).save(photos / f"{stem}.png")
    out = tmp_path / "out"
    command = [
        sys.executable, "-c", "from mobilesam.cli import run; run()",
        "predict", str(photos), "-m", str(checkpoint), "-p", "50,40", "-o", str(out), *ALL_FORMATS, "--threads", "1",
    ]  # fmt: skip
    return stems, out, command


def test_killed_run_leaves_no_partial_files_and_a_rerun_completes_it(checkpoint, tmp_path):
    stems, out, command = _batch(checkpoint, tmp_path, count=3, height=90, width=120)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / "overlays" / "image_00.jpg").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr
    partial = _files(out)
    assert partial and partial < _expected_files(stems)
    assert not [name for name in partial if "/." in f"/{name}" or ".tmp" in name]

    completed = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert completed.returncode == 0, completed.stderr
    assert "already done" in completed.stdout
    assert _files(out) == _expected_files(stems)


def _temporaries_of(pid: int, root: Path) -> list[Path]:
    return list(root.rglob(f".*.{pid}.*.tmp*"))


def _kill_while_writing(process: subprocess.Popen, out: Path, after: Path) -> list[Path]:
    """SIGKILL `process` at a moment when it has a temporary file in `out`, once `after` exists; return those files.

    Seeing a temporary is not enough (it may be renamed a moment later): the
    process is frozen with SIGSTOP, looked at again, and killed only if one is
    still there, else let go on.
    """
    deadline = time.monotonic() + 120
    while not after.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    while process.poll() is None and time.monotonic() < deadline:
        if _temporaries_of(process.pid, out):
            os.kill(process.pid, signal.SIGSTOP)
            os.waitpid(process.pid, os.WUNTRACED)
            left = _temporaries_of(process.pid, out)
            if left:
                process.kill()
                process.communicate(timeout=60)
                return left
            os.kill(process.pid, signal.SIGCONT)
        time.sleep(0.0005)
    return []


def _check_outputs_parse(out: Path, stems: list[str], image_hw: tuple[int, int]) -> None:
    for stem in stems:
        assert _png_mask(out / "masks" / stem / "000.png").shape == image_hw
        assert Image.open(out / "overlays" / f"{stem}.jpg").format == "JPEG"
        json.loads((out / "coco" / f"{stem}.json").read_text())
        json.loads((out / "labelme" / f"{stem}.json").read_text())
        for line in (out / "labels" / f"{stem}.txt").read_text().splitlines():
            [float(value) for value in line.split()]
    assert len(COCO(str(out / "coco.json")).dataset["images"]) == len(stems)


def test_a_run_killed_outright_leaves_only_what_the_rerun_removes(checkpoint, tmp_path):
    # 480 x 640: the overlay's temporary lives long enough (drawing, JPEG) to be caught.
    stems, out, command = _batch(checkpoint, tmp_path, count=4, height=480, width=640)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed_with = _kill_while_writing(process, out, after=out / "labelme" / "image_00.json")
    assert killed_with, "the run was never caught with a temporary file"
    assert process.returncode == -signal.SIGKILL
    assert (out / f".mobilesam-run.{process.pid}.lock").exists(), "SIGKILL runs no cleanup"
    done = [stem for stem in stems if _expected_files([stem]) - {"coco.json"} <= _files(out)]
    assert done and len(done) < len(stems)
    stamps = {name: (out / name).stat().st_mtime_ns for name in _expected_files(done) - {"coco.json"}}
    # Leftovers of the same dead run deeper down, and one of a live writer (this process), which must stay.
    nested = out / "masks" / "sub" / f".image_09.{process.pid}.{'0' * 16}.tmp"
    nested.mkdir(parents=True)
    (nested / "000.png").write_bytes(b"half")
    live = out / "labels" / f".image_09.{os.getpid()}.{'1' * 16}.tmp.txt"
    live.write_text("half")

    completed = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert completed.returncode == 0, completed.stderr
    assert f"{len(stems)} images: {len(stems) - len(done)} written, {len(done)} already done" in completed.stdout
    assert list(out.rglob(".*")) == [live]
    assert _files(out) - {live.relative_to(out).as_posix()} == _expected_files(stems)
    _check_outputs_parse(out, stems, (480, 640))
    assert {name: (out / name).stat().st_mtime_ns for name in stamps} == stamps, "a done image was redone"
