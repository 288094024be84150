"""`Results.masks` / `Results.boxes`: Ultralytics' views and the plain arrays, on constructed masks; no model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mobilesam.draw import PALETTE, draw_overlay
from mobilesam.masks import join_outlines, mask_to_polygons
from mobilesam.results import Boxes, Masks, Results

H, W = 40, 60


def make_result() -> Results:
    """A rectangle, a mask in three parts, a square with a hole and an empty mask."""
    masks = np.zeros((4, H, W), dtype=bool)
    masks[0, 10:20, 20:40] = True
    masks[1, 2:12, 2:14] = True
    masks[1, 30:35, 50:55] = True
    masks[1, 25:28, 25:29] = True
    masks[2, 20:36, 5:21] = True
    masks[2, 25:30, 10:15] = False
    scores = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    return Results(orig_img=np.zeros((H, W, 3), np.uint8), masks=masks, scores=scores)


def test_masks_and_boxes_are_the_plain_arrays():
    result = make_result()
    masks, boxes = np.asarray(result.masks), np.asarray(result.boxes)
    assert masks.shape == result.masks.shape == (4, H, W) and masks.dtype == result.masks.dtype == np.bool_
    assert boxes.shape == result.boxes.shape == (4, 4) and boxes.dtype == result.boxes.dtype == np.float32
    assert len(result.masks) == len(result.boxes) == len(result) == 4
    assert all(np.array_equal(a, b) for a, b in zip(result.masks, masks))
    assert [box.tolist() for box in result.boxes] == [[20, 10, 39, 19], [2, 2, 54, 34], [5, 20, 20, 35], [0, 0, 0, 0]]
    assert isinstance(result.masks[1], np.ndarray) and np.array_equal(result.masks[1], masks[1])
    assert isinstance(result.boxes[1], np.ndarray) and result.boxes[1].tolist() == [2, 2, 54, 34]
    assert result.masks[0].sum() == 200 and np.array_equal(result.masks[1:3, 0], masks[1:3, 0])
    assert torch.equal(torch.from_numpy(np.asarray(result.masks)), result.masks.data)


def test_row_selections_keep_masks_and_boxes_together():
    result = make_result()
    keep = result.boxes.conf > 0.75  # a torch bool tensor, as Ultralytics users write it
    picked_masks, picked_boxes = result.masks[keep], result.boxes[keep]
    assert isinstance(picked_masks, Masks) and isinstance(picked_boxes, Boxes)
    assert picked_masks.shape == (2, H, W) and picked_boxes.conf.tolist() == pytest.approx([0.9, 0.8])
    assert result.boxes[[3, 0]].xyxy.tolist() == [[0, 0, 0, 0], [20, 10, 39, 19]]
    assert result.boxes[2:].conf.tolist() == pytest.approx([0.7, 0.6])
    assert len(result.masks[2:].xy) == 2


def test_boxes_attributes():
    boxes = make_result().boxes
    assert boxes.xyxy[0].tolist() == [20, 10, 39, 19]
    assert boxes.xywh[0].tolist() == [29.5, 14.5, 19, 9]  # centre, width, height
    torch.testing.assert_close(boxes.xyxyn[0], torch.tensor([20 / W, 10 / H, 39 / W, 19 / H]))
    torch.testing.assert_close(boxes.xywhn[0], torch.tensor([29.5 / W, 14.5 / H, 19 / W, 9 / H]))
    # Ultralytics' SAM numbers the masks as its stand-in for classes.
    assert boxes.data.shape == (4, 6) and boxes.data[:, 5].tolist() == [0, 1, 2, 3] and boxes.cls.tolist() == [0, 1, 2, 3]
    torch.testing.assert_close(boxes.data[:, 4], torch.tensor([0.9, 0.8, 0.7, 0.6]))


def test_xy_is_one_polygon_through_every_part():
    # The joining itself is tested in test_masks.py.
    result = make_result()
    xy, xyn = result.masks.xy, result.masks.xyn
    assert all(polygon.dtype == np.float32 for polygon in xy + xyn)
    assert np.array_equal(xy[0], mask_to_polygons(result.masks[0])[0])
    np.testing.assert_allclose(xyn[0], xy[0] / [W, H], rtol=1e-6)
    assert xy[3].shape == xyn[3].shape == (0, 2)
    for index in (1, 2):
        assert np.array_equal(xy[index], join_outlines(mask_to_polygons(result.masks[index])))


def test_plot_draws_masks_then_prompts():
    result = make_result()
    result.points = np.array([[[5.0, 5.0]], [[50.0, 32.0]], [[0.0, 0.0]], [[0.0, 0.0]]])
    result.labels = np.array([[1], [0], [-1], [-1]])
    result.bboxes = np.array([[1, 1, 30, 30], [np.nan] * 4, [np.nan] * 4, [np.nan] * 4])
    plain = result.plot(alpha=0.5, draw_prompts=False)
    assert plain.shape == (H, W, 3) and plain.dtype == np.uint8
    assert plain[15, 30].tolist() == np.round(PALETTE[0] * 0.5).tolist()  # mask 0 over black
    assert plain[0, 0].tolist() == [0, 0, 0]
    drawn = result.plot(alpha=0.5)
    assert np.array_equal(
        drawn, draw_overlay(result.orig_img, np.asarray(result.masks), 0.5, result.points, result.labels, result.bboxes)
    )
    assert drawn[5, 5].tolist() == [0, 220, 0] and drawn[32, 50].tolist() == [230, 0, 0]  # foreground, background dots
    assert drawn[1, 15].tolist() == [255, 255, 255]  # the box's outline


def test_cpu_and_numpy_copy():
    result = make_result()
    as_numpy = result.numpy()
    assert isinstance(as_numpy.masks.data, np.ndarray) and isinstance(as_numpy.boxes.xyxy, np.ndarray)
    assert isinstance(as_numpy.boxes.xywh, np.ndarray) and isinstance(as_numpy.masks[:1].data, np.ndarray)
    on_cpu = result.cpu()
    assert isinstance(on_cpu.masks.data, torch.Tensor) and isinstance(on_cpu.boxes.conf, torch.Tensor)
    as_numpy.masks.data[0] = False
    on_cpu.boxes.xyxy[0] = -1
    assert result.masks[0].any() and result.boxes[0].tolist() == [20, 10, 39, 19]


def test_results_from_tensors_and_empty_results_serialise():
    result = make_result()
    masks = torch.from_numpy(np.asarray(result.masks))
    from_tensor = Results(orig_img=result.orig_img, masks=masks, scores=result.scores)
    assert from_tensor.to_json() == result.to_json()
    empty = Results(orig_img=np.zeros((H, W, 3), np.uint8), masks=np.zeros((0, H, W), bool), scores=np.zeros(0))
    assert json.loads(empty.to_json())["masks"] == [] and empty.masks.xy == [] and empty.boxes.data.shape == (0, 6)
    assert empty.areas().tolist() == []
