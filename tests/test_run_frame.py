"""The frame every batch run shares (`mobilesam.labeling.run_frame`): skip what is done, lock, finalise each format."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from PIL import Image

from images import generated_image
from mobilesam.io.sources import find_jobs
from mobilesam.io.writers import OUTPUT_FORMATS, OutputFormat
from mobilesam.labeling import RunOptions, label_images
from mobilesam.prompts import make_prompt
from mobilesam.registry import build_from_config, get_config
from mobilesam.tasks import PromptTask, job_segmenter
from reference import randomize


@pytest.fixture(scope="module")
def segment():
    model = randomize(build_from_config(dataclasses.replace(get_config("vit_t"), image_size=256)), seed=3)
    return job_segmenter(PromptTask((make_prompt([[20.0, 20.0]], [1]),)).segmenter(model, "torch"))


@pytest.fixture
def finalised(monkeypatch) -> list[tuple[Path, list[str]]]:
    """A format that writes one text file per image and lists the run's stems at the end, as COCO merges."""
    calls: list[tuple[Path, list[str]]] = []

    def write(result, path: Path, stem: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{len(result)}\n")

    fmt = OutputFormat(
        "count", "mask count", lambda stem: f"count/{stem}.txt", write, lambda out, stems: calls.append((out, list(stems)))
    )
    monkeypatch.setitem(OUTPUT_FORMATS, "count", fmt)
    return calls


def _photos(folder: Path, count: int) -> list:
    folder.mkdir()
    for index in range(count):
        Image.fromarray(generated_image(60, 80, seed=index)).save(folder / f"{index}.png")
    return find_jobs(folder)


def test_finalise_sees_every_image_of_the_run_done_or_skipped(tmp_path, segment, finalised):
    jobs = _photos(tmp_path / "photos", 3)
    out = tmp_path / "out"
    options = RunOptions(formats=("count",), progress=False)
    first = label_images(jobs[:2], segment, out, options)
    assert (first.written, first.skipped) == (2, 0)
    second = label_images(jobs, segment, out, options)
    assert (second.written, second.skipped) == (1, 2)
    assert finalised == [(out, ["0", "1"]), (out, ["0", "1", "2"])]
    assert sorted(p.name for p in (out / "count").iterdir()) == ["0.txt", "1.txt", "2.txt"]


def test_a_failing_model_stops_the_run_without_finalising_and_frees_the_folder(tmp_path, segment, finalised):
    jobs = _photos(tmp_path / "photos", 2)
    out = tmp_path / "out"

    def broken(job, image):
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        label_images(jobs, broken, out, RunOptions(formats=("count",), progress=False))
    assert finalised == []
    summary = label_images(jobs, segment, out, RunOptions(formats=("count",), progress=False))
    assert summary.written == 2 and finalised == [(out, ["0", "1"])]


def test_run_options_are_one_frozen_value():
    options = RunOptions()
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.overwrite = True  # type: ignore[misc]
    assert dataclasses.replace(options, workers=4).workers == 4
