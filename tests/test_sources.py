"""Expanding a command's SOURCE: files, folders, globs and prompts files (parsed by `mobilesam.io.prompt_files`)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from mobilesam.io.prompt_files import read_prompt_objects
from mobilesam.io.sources import SourceError, find_jobs, read_prompts_file
from mobilesam.prompts import Prompt


def _image(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(path)
    return path


@pytest.fixture
def photos(tmp_path):
    root = tmp_path / "photos"
    for name in ("b.jpg", "a.png", "sub/c.jpeg", "sub/deeper/d.JPG", ".hidden.jpg", ".cache/e.jpg", "out/old.jpg"):
        _image(root / name)
    (root / "notes.txt").write_text("not an image")
    return root


def test_folder_is_searched_recursively_skipping_hidden_entries_and_the_output(photos):
    jobs = find_jobs(photos, exclude=photos / "out")
    assert [job.stem for job in jobs] == ["a", "b", "sub/c", "sub/deeper/d"]
    assert all(job.objects is None and job.path.is_file() for job in jobs)


def test_glob_names_outputs_relative_to_its_fixed_part(photos):
    jobs = find_jobs(str(photos / "**" / "*.jp*g"))
    assert [job.stem for job in jobs] == ["b", "out/old", "sub/c"]


def test_single_file(photos):
    [job] = find_jobs(photos / "sub" / "c.jpeg")
    assert job.stem == "c"


def test_names_that_differ_only_by_suffix_keep_apart(tmp_path):
    _image(tmp_path / "x.jpg")
    _image(tmp_path / "x.png")
    _image(tmp_path / "y.png")
    assert [job.stem for job in find_jobs(tmp_path)] == ["x_jpg", "x_png", "y"]


def test_missing_and_empty_sources_say_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        find_jobs(tmp_path / "nowhere")
    with pytest.raises(SourceError, match="no images in"):
        find_jobs(tmp_path)
    with pytest.raises(SourceError, match="no images in"):
        find_jobs(str(tmp_path / "*.jpg"))


def test_json_prompts_file_entries_objects_and_mapping(tmp_path):
    prompts = tmp_path / "prompts.json"
    prompts.write_text(
        json.dumps(
            [
                {"image": "a.jpg", "points": [[10, 20], [30, 40]], "labels": [1, 0]},
                {"image": "sub/b.png", "objects": [{"box": [1, 2, 3, 4]}, {"points": [5, 6], "box": [0, 0, 9, 9]}]},
                {"image": "a.jpg", "box": [0, 0, 5, 5]},
            ]
        )
    )
    jobs = read_prompts_file(prompts)
    assert [(job.path, job.stem) for job in jobs] == [(tmp_path / "a.jpg", "a"), (tmp_path / "sub/b.png", "sub/b")]
    first, second = jobs[0].objects
    assert isinstance(first, Prompt) and first.point_labels.dtype == np.int64
    np.testing.assert_array_equal(first.point_coords, [[10, 20], [30, 40]])
    np.testing.assert_array_equal(first.point_labels, [1, 0])
    assert first.box is None
    np.testing.assert_array_equal(second.box, [0, 0, 5, 5])
    assert second.point_coords is None
    assert len(jobs[1].objects) == 2
    np.testing.assert_array_equal(jobs[1].objects[1].point_coords, [[5, 6]])
    np.testing.assert_array_equal(jobs[1].objects[1].point_labels, [1])

    prompts.write_text(json.dumps({"a.jpg": {"points": [[1, 2]]}}))
    [job] = find_jobs(prompts)
    np.testing.assert_array_equal(job.objects[0].point_coords, [[1, 2]])


def test_csv_prompts_file_groups_rows_by_image_and_object(tmp_path):
    prompts = tmp_path / "prompts.csv"
    prompts.write_text(
        "image,object,x,y,label,x1,y1,x2,y2\na.jpg,0,10,20,1,,,,\na.jpg,0,30,40,0,,,,\na.jpg,1,,,,1,2,3,4\nb.jpg,,7,8,,,,,\n"
    )
    jobs = find_jobs(prompts)
    assert [job.stem for job in jobs] == ["a", "b"]
    first, second = jobs[0].objects
    np.testing.assert_array_equal(first.point_coords, [[10, 20], [30, 40]])
    np.testing.assert_array_equal(first.point_labels, [1, 0])
    np.testing.assert_array_equal(second.box, [1, 2, 3, 4])
    np.testing.assert_array_equal(jobs[1].objects[0].point_labels, [1])


@pytest.mark.parametrize(
    ("suffix", "text", "message"),
    [
        (".json", "{not json", "not valid JSON"),
        (".json", '[{"points": [[1, 2]]}]', 'entry 0: needs "image"'),
        (".json", '[{"image": "a.jpg"}]', 'entry 0: an object needs "points" or "box"'),
        (".json", '[{"image": "a.jpg", "points": [[1, 2]], "labels": [1, 0]}]', "2 labels for 1 points"),
        (".json", '[{"image": "a.jpg", "points": [["x", 2]]}]', '"points" must hold numbers'),
        (".json", '[{"image": "a.jpg", "box": [1, 2, 3]}]', '"box" must be [x1, y1, x2, y2]'),
        (".json", '[{"image": "a.jpg", "point": [1, 2]}]', "unknown keys ['point']"),
        (".json", '[{"image": "a.jpg", "objects": []}]', '"objects" must be a non-empty list'),
        (".json", "[]", "no images listed"),
        (".csv", "picture,x,y\na.jpg,1,2\n", 'the header must hold "image"'),
        (".csv", "image,x,y\na.jpg,1,two\n", "line 2: x, y must all be numbers"),
        (".csv", "image,x,y\na.jpg,,\n", "line 2: neither a point"),
        (".csv", "image,x1,y1,x2,y2\na.jpg,1,2,3,4\na.jpg,1,2,3,5\n", "line 3: a second box"),
        # Checked into a Prompt as the file is read, not when the image is segmented.
        (".json", '[{"image": "a.jpg", "points": [[1, 2]], "labels": [2]}]', "entry 0: point labels must be 1 (foreground) or 0"),
        (
            ".json",
            '[{"image": "a.jpg", "objects": [{"box": [1, 2, 3, 4]}, {"box": [9, 2, 3, 4]}]}]',
            "entry 0, object 1: box corners must satisfy x1 <= x2",
        ),
        (".json", '[{"image": "a.jpg", "points": [[NaN, 2]]}]', "entry 0: point_coords contains NaN"),
        (
            ".csv",
            "image,object,x,y,label\na.jpg,0,1,2,1\nb.jpg,0,3,4,1\na.jpg,0,5,6,3\n",
            "lines 2, 4, object 0 of a.jpg: point labels must be 1",
        ),
        (".csv", "image,x1,y1,x2,y2\na.jpg,5,2,3,4\n", "line 2, object 0 of a.jpg: box corners must satisfy"),
    ],
)
def test_malformed_prompts_files_name_the_entry(tmp_path, suffix, text, message):
    prompts = tmp_path / f"prompts{suffix}"
    prompts.write_text(text)
    with pytest.raises(SourceError) as info:
        read_prompt_objects(prompts)
    assert message in str(info.value)
    assert str(prompts) in str(info.value)
