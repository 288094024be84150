"""One pixel limit, read from the header before decoding, for files, URLs and uploads, in every entry point."""

from __future__ import annotations

import json
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile
from typer.testing import CliRunner

from mobilesam import SAM
from mobilesam.cli import app
from mobilesam.errors import ImageTooLarge
from mobilesam.io.images import DEFAULT_MAX_PIXELS, load_image, load_image_bytes, open_image_file

runner = CliRunner()
LIMIT = 10_000
OVER = (101, 100)  # width, height: 10,100 pixels, just over LIMIT
OVER_MESSAGE = "101x100 = 10,100 pixels, over the limit of 10,000"


def _png(path: Path, width: int, height: int) -> Path:
    Image.fromarray(np.full((height, width, 3), 128, np.uint8)).save(path)
    return path


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _header_only_png(width: int, height: int) -> bytes:
    """A valid PNG header for a width x height grayscale image, with (almost) no pixel data: a few dozen bytes."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"")) + _chunk(b"IEND", b"")


@pytest.fixture
def no_decoding(monkeypatch):
    """Fail the test if any pixel is decoded."""

    def refuse(self):
        raise AssertionError(f"decoded a {self.size} image")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)


def test_a_file_just_over_the_limit_is_refused_naming_file_size_limit_and_fix(tmp_path):
    path = _png(tmp_path / "big.png", *OVER)
    with pytest.raises(ImageTooLarge) as raised:
        load_image(path, max_pixels=LIMIT)
    message = str(raised.value)
    assert str(path) in message and OVER_MESSAGE in message
    assert "--max-pixels" in message and "max_pixels" in message
    assert isinstance(raised.value, ValueError)  # callers that catch unreadable images catch this too
    assert (raised.value.width, raised.value.height, raised.value.pixels) == (101, 100, 10_100)
    # At the limit, and above it once raised, it is read.
    assert load_image(_png(tmp_path / "at.png", 100, 100), max_pixels=LIMIT).shape == (100, 100, 3)
    assert load_image(path, max_pixels=10_100).shape == (100, 101, 3)


def test_urls_and_bytes_are_checked_the_same_way(tmp_path):
    path = _png(tmp_path / "big.png", *OVER)
    with pytest.raises(ImageTooLarge, match=OVER_MESSAGE):
        load_image(path.as_uri(), max_pixels=LIMIT)
    with pytest.raises(ImageTooLarge, match=f"image s3://bucket/big.png is {OVER_MESSAGE}"):
        load_image_bytes(path.read_bytes(), "s3://bucket/big.png", max_pixels=LIMIT)
    with pytest.raises(ImageTooLarge, match=f"image upload is {OVER_MESSAGE}"):
        open_image_file(path.read_bytes(), "upload", LIMIT)


def test_decoded_images_are_the_callers_and_not_checked():
    array = np.zeros((100, 101, 3), np.uint8)
    assert load_image(array, max_pixels=LIMIT).shape == (100, 101, 3)
    assert load_image(Image.fromarray(array), max_pixels=LIMIT).shape == (100, 101, 3)


def test_the_limit_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="max_pixels must be at least 1, got 0"):
        load_image(np.zeros((2, 2, 3), np.uint8), max_pixels=0)
    with pytest.raises(ValueError, match="max_pixels must be at least 1, got -1"):
        load_image_bytes(_png(tmp_path / "small.png", 4, 4).read_bytes(), "small.png", max_pixels=-1)


@pytest.mark.parametrize("side", [12_000, 20_000])  # PIL would warn at 144 Mpx, refuse 400 Mpx itself
def test_a_huge_header_is_refused_before_decoding_without_pils_bomb_warning(tmp_path, no_decoding, side):
    path = tmp_path / "bomb.png"
    path.write_bytes(_header_only_png(side, side))
    assert path.stat().st_size < 100
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(
            ImageTooLarge, match=f"{side}x{side} = {side * side:,} pixels, over the limit of {DEFAULT_MAX_PIXELS:,}"
        ):
            load_image(path)


def test_pils_own_limit_does_not_decide_and_is_left_alone(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    path = _png(tmp_path / "photo.png", 60, 60)  # 3,600 pixels: over twice PIL's limit, under ours
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_image(path).shape == (60, 60, 3)
    assert Image.MAX_IMAGE_PIXELS == 1000


def test_cli_predict_lists_the_too_large_image_and_does_the_others(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    big = _png(photos / "big.png", *OVER)
    _png(photos / "small.png", 64, 48)
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["predict", str(photos), "-m", "vit_t", "-p", "10,10", "-o", str(out), "-f", "overlay", "--max-pixels", str(LIMIT)]
    )
    assert result.exit_code == 1, result.output
    assert "2 images: 1 written, 0 already done, 1 failed" in result.output
    assert f"failed: {big}: image {big} is {OVER_MESSAGE}" in result.output
    assert "--max-pixels" in result.output
    assert sorted(p.name for p in (out / "overlays").iterdir()) == ["small.jpg"]


def test_cli_everything_takes_the_same_limit(tmp_path):
    big = _png(tmp_path / "big.png", *OVER)
    result = runner.invoke(
        app, ["everything", str(big), "-m", "vit_t", "-o", str(tmp_path / "out"), "-f", "png", "--max-pixels", str(LIMIT), "-q"]
    )
    assert result.exit_code == 1, result.output
    assert f"failed: {big}: image {big} is {OVER_MESSAGE}" in result.output


def test_cli_val_skips_and_lists_the_too_large_image(tmp_path):
    big = _png(tmp_path / "big.png", *OVER)
    _png(tmp_path / "small.png", 64, 48)
    square = [[5, 5, 40, 5, 40, 40, 5, 40]]
    document = {
        "images": [
            {"id": 1, "file_name": "big.png", "width": 101, "height": 100},
            {"id": 2, "file_name": "small.png", "width": 64, "height": 48},
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "segmentation": square, "iscrowd": 0},
            {"id": 2, "image_id": 2, "category_id": 1, "segmentation": square, "iscrowd": 0},
        ],
        "categories": [{"id": 1, "name": "square"}],
    }
    data = tmp_path / "instances.json"
    data.write_text(json.dumps(document))
    out = tmp_path / "report.json"
    result = runner.invoke(
        app, ["val", "-m", "vit_t", "-d", str(data), "--prompt", "box", "-o", str(out), "--max-pixels", str(LIMIT)]
    )
    assert result.exit_code == 0, result.output
    assert f"skipped: {big}: image {big} is {OVER_MESSAGE}" in result.output
    assert "1 images, 1 skipped, 1 objects" in result.output
    report = json.loads(out.read_text())
    assert [entry["image"] for entry in report["skipped_images"]] == [str(big)]


def test_sam_predict_takes_the_limit(tmp_path):
    big = _png(tmp_path / "big.png", *OVER)
    model = SAM("vit_t", backend="torch")
    with pytest.raises(ImageTooLarge, match=OVER_MESSAGE):
        model.predict(big, points=[10, 10], max_pixels=LIMIT)
    with pytest.raises(ImageTooLarge, match=OVER_MESSAGE):
        model.predict(big, max_pixels=LIMIT, points_per_side=2)  # segment everything: not a generator option
    [result] = model.predict(big, points=[10, 10], max_pixels=10_100)
    assert result.masks.shape == (1, 100, 101)


def test_the_service_still_answers_413_with_its_message(no_decoding):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from mobilesam import build_sam
    from mobilesam.server import PayloadTooLarge, ServeSettings, UnsupportedMedia, create_app, decode_image

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(PayloadTooLarge, match=r"^the image has 12000x12000 = 144,000,000 pixels; the limit is 40,000,000$"):
            decode_image(_header_only_png(12_000, 12_000), 40_000_000)
    with pytest.raises(UnsupportedMedia, match=r"not a readable image \(PNG, JPEG"):
        decode_image(b"\x89PNG not really", 40_000_000)
    with TestClient(create_app(build_sam("vit_t"), ServeSettings(max_pixels=LIMIT))) as client:
        response = client.post("/v1/images", files={"file": ("big.png", _header_only_png(*OVER), "image/png")})
    assert response.status_code == 413
    assert response.json()["detail"] == "the image has 101x100 = 10,100 pixels; the limit is 10,000"
