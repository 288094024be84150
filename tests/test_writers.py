"""Output writers (PNG, overlay, COCO, YOLO-seg, LabelMe) on small synthetic results; no model."""

from __future__ import annotations

import errno
import fcntl
import json
import multiprocessing
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from mobilesam import atomic
from mobilesam.io import mask_png
from mobilesam.io.coco import coco_document, merge_coco, write_coco
from mobilesam.io.labelme import write_labelme
from mobilesam.io.mask_png import write_mask_pngs
from mobilesam.io.overlay import write_overlay
from mobilesam.io.writers import OUTPUT_FORMATS, merge_coco_outputs, output_paths, write_outputs
from mobilesam.io.yolo import write_yolo_seg
from mobilesam.masks import mask_to_polygons
from mobilesam.results import Results

H, W = 40, 60
RECT = (10, 20, 19, 39)  # inclusive (y1, x1, y2, x2) of the rectangle mask


def make_masks() -> np.ndarray:
    """(4, H, W): a rectangle, a two-part mask (big + small), a square with a hole, an empty mask."""
    masks = np.zeros((4, H, W), dtype=bool)
    y1, x1, y2, x2 = RECT
    masks[0, y1 : y2 + 1, x1 : x2 + 1] = True
    masks[1, 2:12, 2:14] = True
    masks[1, 30:35, 50:55] = True
    masks[2, 20:36, 5:21] = True
    masks[2, 25:30, 10:15] = False
    return masks


def make_result(path: str | None = None, n: int | None = None) -> Results:
    masks = make_masks()[:n]
    rng = np.random.default_rng(0)
    count = len(masks)
    points = rng.uniform(0, W, (count, 2, 2)).astype(np.float32)
    labels = np.tile(np.array([[1, -1]]), (count, 1))
    labels[:1, 1] = 0
    return Results(
        orig_img=rng.integers(0, 256, (H, W, 3), dtype=np.uint8),
        masks=masks,
        scores=np.linspace(0.9, 0.6, count).astype(np.float32),
        points=points,
        labels=labels,
        path=path,
    )


def empty_result() -> Results:
    return Results(orig_img=np.zeros((H, W, 3), np.uint8), masks=np.zeros((0, H, W), bool), scores=np.zeros(0))


def hidden_files(directory: pathlib.Path) -> list[str]:
    return [p.name for p in directory.rglob(".*")]


# ---------------------------------------------------------------- polygons


def test_polygons_are_outer_contours_largest_first():
    masks = make_masks()
    rect = mask_to_polygons(masks[0])
    assert len(rect) == 1
    assert sorted(map(tuple, rect[0].tolist())) == [(20, 10), (20, 19), (39, 10), (39, 19)]
    two = mask_to_polygons(masks[1])
    assert len(two) == 2 and two[0][:, 0].max() < 20  # the 12 x 10 part before the 5 x 5 one
    assert len(mask_to_polygons(masks[2])) == 1  # the hole is not traced
    assert mask_to_polygons(masks[3]) == []
    line = np.zeros((H, W), bool)
    line[5, 5:9] = True  # a 1-pixel line has a 2-point contour: no polygon
    assert mask_to_polygons(line) == []


# ---------------------------------------------------------------- PNG


def test_mask_pngs_decode_to_the_masks(tmp_path):
    result = make_result()
    out = write_mask_pngs(result, tmp_path / "masks" / "dog")
    assert sorted(p.name for p in out.iterdir()) == ["000.png", "001.png", "002.png", "003.png"]
    for index, mask in enumerate(result.masks):
        image = Image.open(out / f"{index:03d}.png")
        assert image.mode == "L" and image.size == (W, H)
        pixels = np.asarray(image)
        assert set(np.unique(pixels)) <= {0, 255}
        np.testing.assert_array_equal(pixels == 255, mask)
    assert hidden_files(tmp_path) == []


def test_no_masks_gives_an_empty_directory(tmp_path):
    out = write_mask_pngs(empty_result(), tmp_path / "dog")
    assert out.is_dir() and list(out.iterdir()) == []


def test_rewrite_replaces_the_directory(tmp_path):
    target = tmp_path / "dog"
    write_mask_pngs(make_result(), target)
    write_mask_pngs(make_result(n=2), target)
    assert sorted(p.name for p in target.iterdir()) == ["000.png", "001.png"]
    assert hidden_files(tmp_path) == []


def fail_on_second_save(monkeypatch, exception: type[BaseException]) -> None:
    original = Image.Image.save
    calls = []

    def save(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise exception("interrupted")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", save)


@pytest.mark.parametrize("exception", [OSError, KeyboardInterrupt])
def test_interrupted_png_write_leaves_nothing(tmp_path, monkeypatch, exception):
    fail_on_second_save(monkeypatch, exception)
    with pytest.raises(exception):
        write_mask_pngs(make_result(), tmp_path / "dog")
    assert list(tmp_path.iterdir()) == []


def test_failed_rewrite_keeps_the_old_directory(tmp_path, monkeypatch):
    target = tmp_path / "dog"
    write_mask_pngs(make_result(n=3), target)
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    fail_on_second_save(monkeypatch, KeyboardInterrupt)
    with pytest.raises(KeyboardInterrupt):
        write_mask_pngs(make_result(), target)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert hidden_files(tmp_path) == []


def test_failed_final_rename_restores_the_old_directory(tmp_path, monkeypatch):
    target = tmp_path / "dog"
    write_mask_pngs(make_result(n=3), target)
    real_replace = os.replace

    def replace(src, dst):
        if ".tmp" in os.fspath(src):  # moving the new directory into place
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(mask_png.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        write_mask_pngs(make_result(), target)
    assert sorted(p.name for p in target.iterdir()) == ["000.png", "001.png", "002.png"]
    assert hidden_files(tmp_path) == []


# ---------------------------------------------------------------- overlay


def test_overlay_is_a_jpeg_of_the_image_size(tmp_path):
    result = make_result()
    out = write_overlay(result, tmp_path / "dog.jpg")
    with Image.open(out) as image:
        assert image.format == "JPEG" and image.size == (W, H) and image.mode == "RGB"
    with pytest.raises(ValueError, match="alpha"):
        write_overlay(result, tmp_path / "x.jpg", alpha=2)


# ---------------------------------------------------------------- COCO


def test_coco_loads_and_decodes_to_the_masks(tmp_path):
    result = make_result(path="/data/sub/dog.png")
    path = write_coco(result, tmp_path / "dog.json", "sub/dog.png", image_id=7)
    coco = COCO(str(path))
    assert coco.imgs[7] == {"id": 7, "file_name": "sub/dog.png", "height": H, "width": W}
    annotations = coco.loadAnns(coco.getAnnIds(imgIds=[7]))
    assert [a["id"] for a in annotations] == [1, 2, 3, 4]
    for index, annotation in enumerate(annotations):
        np.testing.assert_array_equal(coco.annToMask(annotation).astype(bool), result.masks[index])
        assert annotation["area"] == result.masks[index].sum()
        assert annotation["score"] == pytest.approx(float(result.scores[index]))
        assert annotation["prompt"] == result.prompt(index)
        assert annotation["category_id"] == 1 and annotation["iscrowd"] == 0
    y1, x1, y2, x2 = RECT
    assert annotations[0]["bbox"] == [x1, y1, x2 - x1 + 1, y2 - y1 + 1]
    assert annotations[0]["prompt"]["labels"] == [1, 0] and annotations[1]["prompt"]["labels"] == [1]
    assert coco.cats == {1: {"id": 1, "name": "object", "supercategory": "object"}}


def test_coco_area_and_bbox_are_pycocotools_own():
    for annotation in coco_document(make_result(), "dog.png")["annotations"]:
        rle = dict(annotation["segmentation"], counts=annotation["segmentation"]["counts"].encode())
        assert annotation["area"] == int(mask_utils.area(rle))
        assert annotation["bbox"] == mask_utils.toBbox(rle).tolist()  # [0, 0, 0, 0] for the empty mask too


def test_coco_of_no_masks_has_no_annotations():
    document = coco_document(empty_result(), "dog.png")
    assert document["annotations"] == [] and len(document["images"]) == 1


def test_merge_renumbers_images_and_annotations(tmp_path):
    first, second = make_result(), make_result(n=2)
    paths = [
        write_coco(first, tmp_path / "a.json", "a.png"),
        write_coco(empty_result(), tmp_path / "b.json", "b.png"),
        write_coco(second, tmp_path / "c.json", "c.png"),
    ]
    merged = json.loads(merge_coco(paths, tmp_path / "all.json").read_text())
    assert [(i["id"], i["file_name"]) for i in merged["images"]] == [(1, "a.png"), (2, "b.png"), (3, "c.png")]
    assert [a["id"] for a in merged["annotations"]] == list(range(1, 7))
    assert [a["image_id"] for a in merged["annotations"]] == [1, 1, 1, 1, 3, 3]
    coco = COCO(str(tmp_path / "all.json"))
    for annotation, mask in zip(coco.loadAnns(coco.getAnnIds(imgIds=[3])), second.masks):
        np.testing.assert_array_equal(coco.annToMask(annotation).astype(bool), mask)
    assert len(merged["categories"]) == 1


# ---------------------------------------------------------------- YOLO


def parse_yolo(path: pathlib.Path) -> list[tuple[int, np.ndarray]]:
    rows = []
    for line in path.read_text().splitlines():
        class_id, *values = line.split()
        assert len(values) % 2 == 0 and len(values) >= 6
        assert all(len(v.split(".")[1]) == 6 for v in values)
        rows.append((int(class_id), np.array(values, dtype=float).reshape(-1, 2)))
    return rows


def test_yolo_lines_parse_and_rectangle_round_trips(tmp_path):
    rows = parse_yolo(write_yolo_seg(make_result(), tmp_path / "dog.txt", class_id=3))
    assert len(rows) == 3  # the empty mask has no line
    for class_id, xy in rows:
        assert class_id == 3 and xy.min() >= 0 and xy.max() <= 1
    corners = rows[0][1] * (W, H)
    y1, x1, y2, x2 = RECT
    expected = np.array([(x1, y1), (x1, y2), (x2, y2), (x2, y1)], dtype=float)
    assert sorted(map(tuple, np.round(corners).tolist())) == sorted(map(tuple, expected.tolist()))
    np.testing.assert_allclose(np.sort(corners, axis=0), np.sort(expected, axis=0), atol=1)
    assert rows[1][1][:, 0].max() * W < 20  # of the two parts, the larger one is kept


def test_yolo_of_no_masks_is_an_empty_file(tmp_path):
    assert write_yolo_seg(empty_result(), tmp_path / "dog.txt").read_text() == ""


# ---------------------------------------------------------------- LabelMe


def test_labelme_document(tmp_path):
    image = tmp_path / "images" / "dog.png"
    result = make_result(path=str(image))
    path = write_labelme(result, tmp_path / "out" / "labelme" / "dog.json")
    document = json.loads(path.read_text())
    assert set(document) == {
        "version",
        "flags",
        "shapes",
        "imagePath",
        "imageData",
        "imageHeight",
        "imageWidth",
    }
    assert document["imagePath"] == "../../images/dog.png"
    assert (path.parent / document["imagePath"]).resolve() == image.resolve()
    assert (document["imageHeight"], document["imageWidth"], document["imageData"]) == (H, W, None)
    shapes = document["shapes"]
    assert [s["group_id"] for s in shapes] == [0, 1, 1, 2]  # two parts share group 1; empty mask 3 has none
    for shape in shapes:
        assert shape["shape_type"] == "polygon" and shape["label"] == "object" and shape["mask"] is None
        assert len(shape["points"]) >= 3 and all(isinstance(v, float) for p in shape["points"] for v in p)


def test_labelme_without_a_file_uses_the_fallback(tmp_path):
    path = write_labelme(make_result(), tmp_path / "dog.json", image_path="dog.png")
    assert json.loads(path.read_text())["imagePath"] == "dog.png"
    with pytest.raises(ValueError, match="image_path"):
        write_labelme(make_result(path="https://example.com/dog.png"), tmp_path / "x.json")


# ---------------------------------------------------------------- atomic files


@pytest.mark.parametrize(
    "write",
    [
        lambda result, path: write_coco(result, path, "dog.png"),
        lambda result, path: write_yolo_seg(result, path),
        lambda result, path: write_labelme(result, path, image_path="dog.png"),
    ],
    ids=["coco", "yolo", "labelme"],
)
def test_interrupted_text_write_leaves_no_file(tmp_path, monkeypatch, write):
    def write_half(self, data):
        with open(self, "wb") as handle:
            handle.write(data[: len(data) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(pathlib.Path, "write_bytes", write_half)
    with pytest.raises(KeyboardInterrupt):
        write(make_result(), tmp_path / "dog.out")
    assert list(tmp_path.iterdir()) == []


def test_interrupted_overlay_leaves_no_file(tmp_path, monkeypatch):
    monkeypatch.setattr(Image.Image, "save", lambda *args, **kwargs: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        write_overlay(make_result(), tmp_path / "dog.jpg")
    assert list(tmp_path.iterdir()) == []


def test_an_interrupt_at_any_line_of_the_atomic_writer_leaves_the_old_file_or_the_new(tmp_path):
    """Ctrl-C (or SIGTERM raised as it) can land between any two lines; each one is tried in turn."""
    target = tmp_path / "labels.txt"
    target.write_text("old")
    atomic_file = atomic.__file__

    def interrupt_at(line_number: int):
        seen = 0

        def trace(frame, event, arg):
            nonlocal seen
            if frame.f_code.co_filename != atomic_file:
                return None
            if event == "line":
                seen += 1
                if seen == line_number:
                    raise KeyboardInterrupt
            return trace

        return trace

    line_number, interrupted = 0, True
    while interrupted:
        line_number += 1
        sys.settrace(interrupt_at(line_number))
        try:
            atomic.write_text_atomic(target, "new")
            interrupted = False
        except KeyboardInterrupt:
            pass
        finally:
            sys.settrace(None)
        assert [p.name for p in tmp_path.iterdir()] == ["labels.txt"], f"interrupted at line {line_number}"
        assert target.read_text() in ("old", "new")
    assert target.read_text() == "new" and line_number > 5


def dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    process = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(process.stdout)


def test_a_temporary_names_its_writer_and_keeps_the_suffix(tmp_path):
    with atomic.atomic_path(tmp_path / "labels.txt") as tmp:
        assert re.fullmatch(rf"\.labels\.{os.getpid()}\.[0-9a-f]{{16}}\.tmp\.txt", tmp.name)


def test_the_sweep_removes_only_dead_writers_temporaries(tmp_path):
    dead = dead_pid()
    top = tmp_path / f".dog.{dead}.{'0' * 16}.tmp.png"
    nested = tmp_path / "sub" / f".dog.{dead}.{'0' * 16}.tmp.json"
    scratch = tmp_path / "sub" / f".0123456789abcdef01234567.{dead}.tmp"  # the export cache's scratch folder
    kept = [
        tmp_path / f".dog.{os.getpid()}.{'0' * 16}.tmp.png",  # a live writer's
        tmp_path / ".keep",
        tmp_path / f"dog.{dead}.{'0' * 16}.tmp.png",  # not hidden: a user's file
        tmp_path / f".dog.{'1' * 8}.tmp",  # no pid (all digits, but 8 of them)
    ]
    nested.parent.mkdir()
    scratch.mkdir()
    for path in [top, nested, scratch / "encoder.onnx", *kept]:
        path.write_bytes(b"half")

    assert atomic.remove_dead_temporaries(tmp_path) == [top]
    assert nested.exists() and scratch.exists()
    assert sorted(atomic.remove_dead_temporaries(tmp_path, recursive=True)) == sorted([scratch, nested])
    assert sorted(p for p in tmp_path.rglob("*") if p.is_file()) == sorted(kept)
    assert atomic.remove_dead_temporaries(tmp_path / "missing", recursive=True) == []


def test_an_unheld_run_lock_marks_its_pid_dead_even_where_the_pid_is_in_use(tmp_path):
    """A killed run's pid taken by a live process (in a container every run may be pid 1) does not keep its files."""
    lock = tmp_path / f".mobilesam-run.{os.getpid()}.lock"
    lock.touch()
    leftover = tmp_path / "overlays" / f".dog.{os.getpid()}.{'0' * 16}.tmp.jpg"
    leftover.parent.mkdir()
    leftover.touch()
    assert atomic.remove_dead_temporaries(tmp_path, recursive=True) == [leftover]
    assert list(tmp_path.rglob(".*")) == []


def test_a_held_run_lock_keeps_its_pids_temporaries_while_it_is_held(tmp_path):
    dead = dead_pid()
    work = [tmp_path / f".dog.{pid}.{'0' * 16}.tmp.png" for pid in (dead, os.getpid())]
    for path in work:
        path.touch()
    # The first as a live run of the same pid number elsewhere (another container) would hold it.
    other = os.open(tmp_path / f".mobilesam-run.{dead}.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(other, fcntl.LOCK_SH)
        with atomic.run_lock(tmp_path):
            assert (tmp_path / f".mobilesam-run.{os.getpid()}.lock").exists()
            assert atomic.remove_dead_temporaries(tmp_path) == []
        assert not (tmp_path / f".mobilesam-run.{os.getpid()}.lock").exists(), "a finished run leaves no lock"
        assert atomic.remove_dead_temporaries(tmp_path) == []
    finally:
        os.close(other)
    assert atomic.remove_dead_temporaries(tmp_path) == work[:1]
    assert list(tmp_path.iterdir()) == work[1:]


def test_a_run_goes_on_without_its_lock_where_the_filesystem_has_no_locks(tmp_path, monkeypatch):
    def no_locks(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(atomic.fcntl, "flock", no_locks)
    leftover = tmp_path / f".dog.{dead_pid()}.{'0' * 16}.tmp.png"
    mine = tmp_path / f".cat.{os.getpid()}.{'0' * 16}.tmp.png"
    leftover.touch()
    with atomic.run_lock(tmp_path):
        assert list(tmp_path.iterdir()) == [leftover], "a lock file that locks nothing is not left"
        mine.touch()
        assert atomic.remove_dead_temporaries(tmp_path) == [leftover]
    assert list(tmp_path.iterdir()) == [mine]


def write_and_die_before_the_rename(out: pathlib.Path, format_name: str) -> None:
    """In a forked child: write `format_name` and exit at its final rename, running no cleanup, as SIGKILL would."""
    os.replace = lambda *args: os._exit(9)
    write_outputs(make_result(path="dog.png"), out, "sub/dog", [format_name])


@pytest.mark.parametrize("format_name", list(OUTPUT_FORMATS))
def test_a_writer_killed_mid_write_leaves_only_what_the_sweep_removes(tmp_path, format_name):
    child = multiprocessing.get_context("fork").Process(target=write_and_die_before_the_rename, args=(tmp_path, format_name))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 9
    assert hidden_files(tmp_path), "the child died before it made a temporary"
    atomic.remove_dead_temporaries(tmp_path, recursive=True)
    assert hidden_files(tmp_path) == []


# ---------------------------------------------------------------- registry


def test_registry_layout_and_write_outputs(tmp_path):
    assert list(OUTPUT_FORMATS) == ["png", "overlay", "coco", "yolo", "labelme"]
    paths = output_paths(tmp_path, "sub/dog", OUTPUT_FORMATS)
    assert [p.relative_to(tmp_path).as_posix() for p in paths] == [
        "masks/sub/dog",
        "overlays/sub/dog.jpg",
        "coco/sub/dog.json",
        "labels/sub/dog.txt",
        "labelme/sub/dog.json",
    ]
    result = make_result(path=str(tmp_path / "src" / "sub" / "dog.jpeg"))
    assert write_outputs(result, tmp_path, "sub/dog", OUTPUT_FORMATS) == paths
    assert all(p.exists() for p in paths) and hidden_files(tmp_path) == []
    assert json.loads(paths[2].read_text())["images"][0]["file_name"] == "sub/dog.jpeg"
    assert json.loads(paths[4].read_text())["imagePath"] == "../../src/sub/dog.jpeg"


def test_registry_rejects_unknown_formats_and_bad_stems(tmp_path):
    with pytest.raises(ValueError, match="unknown output format"):
        output_paths(tmp_path, "dog", ["png", "tiff"])
    for stem in ["../dog", "/abs/dog", ""]:
        with pytest.raises(ValueError, match="stem"):
            output_paths(tmp_path, stem, ["png"])


def test_merge_coco_outputs_skips_missing_images(tmp_path):
    write_outputs(make_result(n=2), tmp_path, "b", ["coco"])
    write_outputs(make_result(n=1), tmp_path, "a/c", ["coco"])
    merged = json.loads(merge_coco_outputs(tmp_path, ["a/c", "missing", "b"]).read_text())
    assert [i["file_name"] for i in merged["images"]] == ["a/c", "b"]
    assert [a["image_id"] for a in merged["annotations"]] == [1, 2, 2]
    assert merged == json.loads((tmp_path / "coco.json").read_text())


def test_written_files_get_the_usual_permissions(tmp_path):
    previous = os.umask(0o022)
    try:
        path = write_yolo_seg(make_result(), tmp_path / "dog.txt")
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o644
