"""Validation metrics, protocols and click simulation on constructed masks with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from images import sample_images
from mobilesam import SamPredictor, build_sam
from mobilesam.masks import coco_encode_mask, mask_iou
from mobilesam.val import parse_protocols
from mobilesam.val.clicks import farthest_point, next_click, replay_clicks, simulate_clicks
from mobilesam.val.metrics import InstanceScore, match_masks, rle_iou, size_bucket, summarize
from mobilesam.val.protocols import Protocol, jitter_box, mask_box, parse_protocol
from reference import randomize


def _rect(shape: tuple[int, int], top: int, left: int, bottom: int, right: int) -> np.ndarray:
    """(H, W) bool with rows top..bottom-1 and columns left..right-1 set."""
    mask = np.zeros(shape, dtype=bool)
    mask[top:bottom, left:right] = True
    return mask


def test_mask_iou_of_overlapping_rectangles():
    shape = (40, 40)
    a = _rect(shape, 0, 0, 10, 10)  # 100 pixels
    assert mask_iou(a, _rect(shape, 5, 0, 15, 10)) == 50 / 150
    assert mask_iou(a, _rect(shape, 0, 0, 10, 5)) == 0.5  # inside: 50 / 100
    assert mask_iou(a, a) == 1.0
    assert mask_iou(a, _rect(shape, 20, 20, 30, 30)) == 0.0
    assert mask_iou(np.zeros(shape, bool), a) == 0.0
    assert mask_iou(np.zeros(shape, bool), np.zeros(shape, bool)) == 1.0


def test_size_buckets_follow_coco_areas():
    assert [size_bucket(a) for a in (1, 1023, 1024, 9215, 9216, 10**6)] == [
        "small",
        "small",
        "medium",
        "medium",
        "large",
        "large",
    ]


def test_match_masks_picks_the_best_candidate_per_ground_truth():
    shape = (32, 32)
    gts = [_rect(shape, 0, 0, 8, 8), _rect(shape, 16, 16, 32, 32)]
    candidates = [
        _rect(shape, 0, 0, 8, 4),  # IoU 0.5 with gt 0
        _rect(shape, 16, 16, 32, 24),  # IoU 0.5 with gt 1
        _rect(shape, 0, 0, 8, 6),  # IoU 0.75 with gt 0
        _rect(shape, 0, 16, 8, 24),  # matches nothing
    ]
    best, ious = match_masks([coco_encode_mask(m) for m in candidates], [coco_encode_mask(m) for m in gts])
    assert best.tolist() == [2, 1]
    assert ious.tolist() == [0.75, 0.5]
    best, ious = match_masks([], [coco_encode_mask(m) for m in gts])
    assert best.tolist() == [-1, -1] and ious.tolist() == [0.0, 0.0]
    assert rle_iou(coco_encode_mask(candidates[0]), coco_encode_mask(gts[0])) == 0.5
    assert rle_iou(None, None) == 1.0 and rle_iou(None, coco_encode_mask(gts[0])) == 0.0


def test_summary_of_known_ious():
    scores = [
        InstanceScore("cat", 100, (0.25, 0.5), 0.5, (1.0, 0.5)),  # small
        InstanceScore("cat", 2000, (0.5, 0.75), 0.5, (0.5, 0.5)),  # medium
        InstanceScore("dog", 20000, (0.75, 1.0), 0.75, (0.0, 0.25)),  # large
        InstanceScore("dog", 5000, (1.0, 0.25), 0.5, (0.5, 0.25)),  # medium
    ]
    result = summarize("clicks:2", scores, per_click=True)
    assert result.count == 4
    assert result.miou == (0.5 + 0.75 + 1.0 + 0.25) / 4
    assert result.per_click == [(0.25 + 0.5 + 0.75 + 1.0) / 4, 0.625]
    assert result.per_category == {"cat": 0.625, "dog": 0.625}
    assert result.per_size == {"small": 0.5, "medium": 0.5, "large": 1.0}
    assert result.size_counts == {"small": 1, "medium": 2, "large": 1}
    assert result.teacher_miou == (0.5 + 0.5 + 0.25 + 0.25) / 4
    assert result.teacher_per_click == [0.5, 0.375]
    calibration = result.calibration
    assert calibration.mean_predicted_iou == 0.5625 and calibration.mean_actual_iou == 0.625
    assert calibration.mean_abs_gap == (0.0 + 0.25 + 0.25 + 0.25) / 4 and calibration.count == 4


def test_summary_without_sizes_masks_or_teacher():
    result = summarize("everything", [InstanceScore("object", 50, (0.0,), None), InstanceScore("object", 60, (0.5,), 0.75)])
    assert result.per_size == {"small": 0.25, "medium": None, "large": None}
    assert result.per_click is None and result.teacher_miou is None
    # Only the object that has a mask counts for calibration.
    assert (result.calibration.mean_predicted_iou, result.calibration.mean_actual_iou, result.calibration.count) == (0.75, 0.5, 1)
    assert summarize("everything", [InstanceScore("object", 50, (0.0,), None)]).calibration is None
    with pytest.raises(ValueError, match="no instances"):
        summarize("box", [])


def test_protocols_parse_and_reject_bad_names():
    assert parse_protocol("box") == Protocol("box", "box")
    assert parse_protocol("Box:0.10") == Protocol("box:0.1", "box", jitter=0.1)
    assert parse_protocol("box:0") == Protocol("box", "box")
    assert parse_protocol("point") == Protocol("point", "point", clicks=1)
    assert parse_protocol("clicks:5") == Protocol("clicks:5", "clicks", clicks=5)
    assert parse_protocol("everything") == Protocol("everything", "everything")
    assert [p.name for p in parse_protocols(["box,point", "clicks:3", "box"])] == ["box", "point", "clicks:3"]
    for bad, message in [
        ("clicks:0", "K >= 1"),
        ("clicks", "K >= 1"),
        ("clicks:2.5", "K >= 1"),
        ("box:-0.1", "jitter >= 0"),
        ("box:nan", "jitter >= 0"),
        ("foo", "unknown protocol 'foo'; choose from box, box:JITTER, point, clicks:K, everything"),
        ("point:3", "unknown protocol"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_protocol(bad)
    with pytest.raises(ValueError, match="no protocol"):
        parse_protocols([" , "])


def test_box_is_the_tight_pixel_edge_box_and_jitter_is_seeded():
    mask = _rect((50, 60), 10, 20, 30, 50)
    box = mask_box(mask)
    assert box.tolist() == [20, 10, 50, 30]
    first = jitter_box(box, 0.1, (50, 60), np.random.default_rng((0, 1, 2)))
    again = jitter_box(box, 0.1, (50, 60), np.random.default_rng((0, 1, 2)))
    other = jitter_box(box, 0.1, (50, 60), np.random.default_rng((1, 1, 2)))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other) and not np.array_equal(first, box)
    assert np.abs(first - box).max() < 0.6 * 30  # within 6 standard deviations of the side
    huge = jitter_box(box, 50.0, (50, 60), np.random.default_rng(3))
    assert 0 <= huge[0] <= huge[2] <= 60 and 0 <= huge[1] <= huge[3] <= 50


def test_farthest_point_is_the_centre_and_the_image_edge_is_boundary():
    assert farthest_point(_rect((30, 40), 10, 20, 19, 29)) == ((24, 14), 5.0)  # 9 x 9 square
    # A region against the left edge: without the zero border its farthest pixel would be at x = 0.
    (x, y), depth = farthest_point(_rect((20, 40), 0, 0, 20, 10))
    assert depth == 5.0 and x in (4, 5)
    assert farthest_point(np.zeros((5, 5), bool))[1] == 0.0


def test_next_click_goes_to_the_deeper_error_region():
    shape = (40, 120)
    gt = _rect(shape, 10, 0, 30, 100)
    # Missed: a 1-pixel-wide strip of 20 pixels (depth 1); spurious: a 7 x 7 block (depth 4).
    pred = gt.copy()
    pred[10:30, 50] = False
    pred[0:7, 110:117] = True
    click = next_click(gt, pred)
    assert click.label == 0 and click.xy == (113, 3)
    # With the spurious block gone, the missed strip gets a positive click.
    pred[0:7, 110:117] = False
    click = next_click(gt, pred)
    assert click.label == 1 and click.xy[0] == 50
    # Equal depths: positive.
    tie = gt.copy()
    tie[20, 20] = False
    tie[0, 119] = True
    assert next_click(gt, tie).label == 1 and next_click(gt, tie).xy == (20, 20)
    assert next_click(gt, gt.copy()) is None


def test_next_click_is_always_inside_the_error_region():
    rng = np.random.default_rng(0)
    for _ in range(200):
        shape = tuple(rng.integers(1, 30, size=2))
        gt = rng.random(shape) < rng.random()
        pred = rng.random(shape) < rng.random()
        click = next_click(gt, pred)
        if np.array_equal(gt, pred):
            assert click is None
            continue
        x, y = click.xy
        assert gt[y, x] != pred[y, x], "a click on a pixel the mask already has right"
        assert click.label == int(gt[y, x]), "positive exactly on missed pixels"


IMAGE = sample_images()["chelsea"][::3, ::3]  # 100 x 151


@pytest.fixture(scope="module")
def predictor() -> SamPredictor:
    predictor = SamPredictor(randomize(build_sam("vit_t"), seed=5))
    predictor.set_image(IMAGE)
    return predictor


def test_simulated_clicks_correct_the_previous_mask(predictor):
    gt = np.zeros((100, 151), dtype=bool)
    gt[20:70, 30:110] = True
    trace = simulate_clicks(predictor, IMAGE, gt, num_clicks=4)
    assert 1 <= len(trace.clicks) <= 4 and len(trace.masks) == len(trace.scores) == len(trace.clicks)
    assert trace.clicks[0].xy == farthest_point(gt)[0] and trace.clicks[0].label == 1
    for previous, click in zip(trace.masks, trace.clicks[1:]):
        x, y = click.xy
        assert previous[y, x] != gt[y, x] and click.label == int(gt[y, x])
        assert click == next_click(gt, previous)
    if len(trace.clicks) < 4:
        assert np.array_equal(trace.masks[-1], gt)
    # The same clicks on the same model give the same masks: the simulation is deterministic.
    replayed = replay_clicks(predictor, IMAGE, trace.clicks)
    for a, b in zip(trace.masks, replayed.masks):
        np.testing.assert_array_equal(a, b)
    assert replayed.scores == trace.scores
