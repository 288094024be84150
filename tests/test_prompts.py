"""The one prompt type: checked once by `make_prompt`, and against its image by `check_in_image`."""

from __future__ import annotations

import numpy as np
import pytest

from mobilesam.prompts import Prompt, as_object_prompts, check_in_image, check_prompt, make_prompt

MASK_SIZE = (256, 256)


def test_make_prompt_checks_everything_but_the_image():
    prompt = make_prompt([[10, 20], [5000, 30]], [1.0, 0.0], [1, 2, 3, 4])
    assert isinstance(prompt, Prompt)
    assert prompt.point_coords.dtype == np.float64 and prompt.point_labels.dtype == np.int64
    assert prompt.point_labels.tolist() == [1, 0] and prompt.box.tolist() == [1, 2, 3, 4]
    assert make_prompt(mask_input=np.zeros(MASK_SIZE)).mask_input.shape == (1, *MASK_SIZE)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (dict(point_coords=[[1, 2]]), "point_labels must be given with point_coords"),
        (dict(point_labels=[1]), "point_labels were given without point_coords"),
        (dict(point_coords=[[1, 2]], point_labels=[2]), r"1 \(foreground\) or 0 \(background\), got \[2\]"),
        (dict(point_coords=[[1, 2]], point_labels=[1, 0]), "expected 1 point labels"),
        (dict(point_coords=[[np.nan, 2]], point_labels=[1]), "point_coords contains NaN"),
        (dict(box=[9, 2, 3, 4]), "x1 <= x2 and y1 <= y2"),
        (dict(box=[[1, 2, 3, 4], [1, 2, 3, 4]]), "predict takes one box"),
        (dict(mask_input=np.zeros((64, 64))), r"mask_input must have shape \(1, 256, 256\)"),
    ],
)
def test_make_prompt_errors_say_what_is_wrong(arguments, message):
    with pytest.raises(ValueError, match=message):
        make_prompt(**arguments)


def test_check_in_image_is_the_one_image_check():
    far_point = make_prompt([[5000, 10]], [1])
    far_box = make_prompt(box=[0, 0, 10, 900])
    with pytest.raises(ValueError, match=r"point \(5000, 10\) lies far outside the 600x400 image"):
        check_in_image(far_point, (400, 600))
    with pytest.raises(ValueError, match=r"box corner \(10, 900\) lies far outside the 600x400 image"):
        check_in_image(far_box, (400, 600))
    check_in_image(far_point, (100, 4000))
    with pytest.raises(ValueError, match="lies far outside"):
        check_prompt((400, 600), MASK_SIZE, [[5000, 10]], [1])


def test_ultralytics_nesting_gives_one_prompt_per_object():
    one_per_point = as_object_prompts([[1, 2], [3, 4]], [1, 0], None)
    assert [p.point_coords.tolist() for p in one_per_point] == [[[1, 2]], [[3, 4]]]
    assert [p.point_labels.tolist() for p in one_per_point] == [[1], [0]]
    [together] = as_object_prompts([[[1, 2], [3, 4]]], [[1, 0]], [0, 0, 9, 9])
    assert together.point_coords.shape == (2, 2) and together.box.tolist() == [0, 0, 9, 9]
    boxes = as_object_prompts(None, None, [[0, 0, 5, 5], [1, 1, 6, 6]])
    assert [p.box.tolist() for p in boxes] == [[0, 0, 5, 5], [1, 1, 6, 6]] and boxes[0].point_coords is None
    with pytest.raises(ValueError, match=r"1 \(foreground\) or 0 \(background\)"):
        as_object_prompts([[1, 2], [3, 4]], [1, 2], None)
    with pytest.raises(ValueError, match="no prompt"):
        as_object_prompts(None, None, None)
