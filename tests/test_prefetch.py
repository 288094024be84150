"""Images decoded ahead in a background thread: order, errors, and stopping early."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from PIL import Image

from mobilesam.io import prefetch
from mobilesam.io.prefetch import prefetch_images
from mobilesam.io.sources import ImageJob


@pytest.fixture
def jobs(tmp_path):
    made = []
    for index in range(5):
        path = tmp_path / f"{index}.png"
        Image.fromarray(np.full((3, 4, 3), index, np.uint8)).save(path)
        made.append(ImageJob(path, str(index)))
    return made


def _reader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "mobilesam-image-reader"]


def test_images_come_in_order_with_read_errors_in_place(jobs, tmp_path):
    (tmp_path / "2.png").write_bytes(b"not a png")
    jobs.insert(1, ImageJob(tmp_path / "missing.png", "missing"))
    seen = list(prefetch_images(jobs, depth=2))
    assert [job.stem for job, _ in seen] == ["0", "missing", "1", "2", "3", "4"]
    assert isinstance(seen[1][1], FileNotFoundError)
    assert isinstance(seen[3][1], ValueError) and "cannot read image" in str(seen[3][1])
    for job, image in seen[2:3] + seen[4:]:
        assert image.shape == (3, 4, 3) and (image == int(job.stem)).all()
    assert _reader_threads() == []


def test_stopping_early_stops_the_reader(jobs):
    iterator = prefetch_images(jobs, depth=1)
    next(iterator)
    iterator.close()
    assert _reader_threads() == []


def test_unexpected_errors_reach_the_consumer(jobs, monkeypatch):
    def broken(path, **options):
        raise MemoryError("out of memory")

    monkeypatch.setattr(prefetch, "load_image", broken)
    with pytest.raises(MemoryError, match="out of memory"):
        list(prefetch_images(jobs))
    assert _reader_threads() == []
