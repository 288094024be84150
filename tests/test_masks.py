"""masks.py against the reference's utils/amg.py (identical results on constructed masks) and pycocotools."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from mobile_sam.utils import amg as ref
from pycocotools import mask as mask_utils

from images import generated_image
from mobilesam import SamAutomaticMaskGenerator, SamPredictor, build_sam
from mobilesam import masks as ours
from reference import (
    mobile_sam,  # noqa: F401  (imports the reference quietly)
    randomize,
)


def _blobs(n: int, h: int, w: int, seed: int) -> torch.Tensor:
    """(n, h, w) bool masks: random discs, plus an empty, a full and an edge-touching one."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    masks = np.zeros((n, h, w), bool)
    for i in range(n):
        for _ in range(rng.integers(1, 4)):
            cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(1, max(h, w) / 3)
            masks[i] |= (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
    masks[0] = False
    masks[1] = True
    masks[2, :, : w // 3] = True
    return torch.from_numpy(masks)


@pytest.mark.parametrize(("h", "w"), [(37, 53), (64, 64), (1, 7)])
def test_boxes_rle_and_area_match_reference(h, w):
    masks = _blobs(9, h, w, seed=h * w)
    assert torch.equal(ours.batched_mask_to_box(masks), ref.batched_mask_to_box(masks))
    assert torch.equal(ours.batched_mask_to_box(masks.view(3, 3, h, w)), ref.batched_mask_to_box(masks.view(3, 3, h, w)))
    assert torch.equal(ours.batched_mask_to_box(masks[3]), ref.batched_mask_to_box(masks[3]))
    rles = ours.mask_to_rle(masks)
    assert rles == ref.mask_to_rle_pytorch(masks)
    for rle, mask in zip(rles, masks):
        assert np.array_equal(ours.rle_to_mask(rle), mask.numpy())
        assert ours.area_from_rle(rle) == int(mask.sum())
        coco = ours.coco_encode_rle(rle)
        assert coco == ref.coco_encode_rle(rle)
        assert np.array_equal(mask_utils.decode(dict(coco, counts=coco["counts"].encode())).astype(bool), mask.numpy())
        assert np.array_equal(ours.coco_decode_rle(coco), mask.numpy())


def test_empty_inputs():
    empty = torch.zeros((0, 5, 6), dtype=torch.bool)
    assert ours.batched_mask_to_box(empty).shape == (0, 4)
    assert ours.mask_to_rle(empty) == []


def test_pixel_edge_boxes_reach_one_past_the_last_pixel():
    masks = _blobs(9, 37, 53, seed=7)
    inclusive, edges = ours.batched_mask_to_box(masks), ours.batched_mask_to_box(masks, pixel_edges=True)
    assert edges[0].tolist() == [0, 0, 0, 0]  # an empty mask has no box in either convention
    assert edges[1].tolist() == [0, 0, 53, 37]
    assert torch.equal(edges[1:], inclusive[1:] + torch.tensor([0, 0, 1, 1]))


def test_one_mask_encodes_as_pycocotools_does():
    for mask in _blobs(9, 37, 53, seed=5).numpy():
        coco = ours.coco_encode_mask(mask)
        assert coco == ours.encode_masks(mask[None], [0.0])[0].rle
        assert coco["counts"] == mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"].decode()


def test_encoder_matches_pycocotools_and_the_parts_it_replaces():
    masks = _blobs(9, 37, 53, seed=5)
    scores = torch.linspace(0.9, 0.1, 9)
    encoded = ours.encode_masks(masks, scores)
    assert ours.encode_masks(masks.numpy(), scores.numpy()) == encoded
    boxes = ours.batched_mask_to_box(masks)
    for mask, box, score, code in zip(masks, boxes, scores, encoded):
        rle = ours.mask_to_rle(mask[None])[0]
        assert code.uncompressed_rle == rle and code.rle == ours.coco_encode_rle(rle)
        compressed = dict(code.rle, counts=code.rle["counts"].encode())
        assert code.area == int(mask.sum()) == int(mask_utils.area(compressed))
        assert code.box == tuple(box.tolist()) and all(isinstance(v, int) for v in code.box)
        assert code.bbox == ours.box_xyxy_to_xywh(box).tolist()
        assert code.coco_bbox == mask_utils.toBbox(compressed).tolist()
        assert code.score == score.item()


def test_encoder_keeps_given_boxes_and_checks_lengths():
    masks = _blobs(3, 20, 30, seed=1)
    given = np.array([[1.5, 2, 3, 4]] * 3, np.float32)
    assert [code.box for code in ours.encode_masks(masks, [0.5] * 3, boxes=given)] == [(1.5, 2.0, 3.0, 4.0)] * 3
    assert ours.encode_masks(torch.zeros((0, 4, 5), dtype=torch.bool), []) == []
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        ours.encode_masks(masks[0], [0.5])
    with pytest.raises(ValueError, match="3 masks, 3 boxes, 2 scores"):
        ours.encode_masks(masks, [0.5, 0.5])


def test_encoder_reproduces_the_generator_records():
    """What SamAutomaticMaskGenerator.generate builds from its RLEs and XYXY boxes, the encoder builds too."""
    model = randomize(build_sam("vit_t"), seed=3)
    image = generated_image(96, 160, seed=2)
    embedding = SamPredictor(model).embed(image)
    options = dict(points_per_side=6, pred_iou_thresh=0.0, stability_score_thresh=0.0, min_mask_region_area=20)
    coco, raw = (
        SamAutomaticMaskGenerator(model, output_mode=mode, **options).generate(image, embedding=embedding)
        for mode in ("coco_rle", "uncompressed_rle")
    )
    assert len(coco) == len(raw) > 0
    boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (r["bbox"] for r in raw)])  # the XYXY it held
    encoded = ours.encode_rles([record["segmentation"] for record in raw], boxes, [r["predicted_iou"] for r in raw])
    for code, record in zip(encoded, coco):
        assert code.rle == record["segmentation"] and code.area == record["area"]
        assert code.bbox == record["bbox"] and code.score == record["predicted_iou"]
        assert [type(v) for v in code.bbox] == [type(v) for v in record["bbox"]]


def test_stability_score_matches_reference():
    logits = torch.randn((6, 3, 70, 90), generator=torch.Generator().manual_seed(0)) * 3
    for offset in (0.5, 1.0):
        assert torch.equal(
            ours.calculate_stability_score(logits, 0.0, offset), ref.calculate_stability_score(logits, 0.0, offset)
        )


@pytest.mark.parametrize("n", [1, 4, 32])
def test_point_grids_match_reference(n):
    assert np.array_equal(ours.build_point_grid(n), ref.build_point_grid(n))
    for layers, scale in [(0, 1), (2, 2 if n >= 4 else 1), (1, 1)]:
        for a, b in zip(ours.build_all_layer_point_grids(n, layers, scale), ref.build_all_layer_point_grids(n, layers, scale)):
            assert np.array_equal(a, b)


@pytest.mark.parametrize("size", [(400, 600), (512, 512), (123, 457)])
@pytest.mark.parametrize("layers", [0, 1, 2])
def test_crop_boxes_match_reference(size, layers):
    assert ours.generate_crop_boxes(size, layers, 512 / 1500) == ref.generate_crop_boxes(size, layers, 512 / 1500)


def test_uncrop_and_edge_filters_match_reference():
    crop_box = [100, 50, 400, 300]
    boxes = torch.tensor([[0, 0, 10, 10], [280, 5, 299, 249], [5, 200, 50, 249], [1, 1, 298, 248]])
    points = torch.tensor([[1.5, 2.5], [10.0, 20.0]], dtype=torch.float64)
    masks = _blobs(3, 250, 300, seed=1)
    assert torch.equal(ours.uncrop_boxes_xyxy(boxes, crop_box), ref.uncrop_boxes_xyxy(boxes, crop_box))
    assert torch.equal(ours.uncrop_points(points, crop_box), ref.uncrop_points(points, crop_box))
    assert torch.equal(ours.uncrop_masks(masks, crop_box, 500, 600), ref.uncrop_masks(masks, crop_box, 500, 600))
    for orig in ([0, 0, 600, 500], [0, 0, 400, 300]):
        assert torch.equal(ours.is_box_near_crop_edge(boxes, crop_box, orig), ref.is_box_near_crop_edge(boxes, crop_box, orig))
    box = torch.tensor([3, 4, 10, 20])
    assert torch.equal(ours.box_xyxy_to_xywh(box), ref.box_xyxy_to_xywh(box))
    assert box.tolist() == [3, 4, 10, 20]


@pytest.mark.parametrize("mode", ["holes", "islands"])
@pytest.mark.parametrize("area", [5, 40, 10_000])
def test_remove_small_regions_matches_reference(mode, area):
    mask = np.zeros((60, 80), bool)
    mask[5:40, 5:50] = True
    mask[10:13, 10:12] = False  # a small hole
    mask[20:35, 20:35] = False  # a large hole
    mask[50:52, 70:73] = True  # a small island
    mask[45:58, 55:62] = True  # a medium island
    result, changed = ours.remove_small_regions(mask, area, mode)
    expected, expected_changed = ref.remove_small_regions(mask, area, mode)
    assert np.array_equal(result, expected) and changed == expected_changed


def _outline_masks() -> np.ndarray:
    """A mask in three parts and a square with a hole, 40 x 60."""
    masks = np.zeros((2, 40, 60), dtype=bool)
    masks[0, 2:12, 2:14] = True
    masks[0, 30:35, 50:55] = True
    masks[0, 25:28, 25:29] = True
    masks[1, 20:36, 5:21] = True
    masks[1, 25:30, 10:15] = False
    return masks


def test_joined_outlines_enclose_every_part_and_only_seams_besides():
    assert ours.join_outlines([]).shape == (0, 2) and ours.join_outlines([]).dtype == np.float32
    for mask in _outline_masks():
        outlines = ours.mask_to_polygons(mask)
        joined = ours.join_outlines(outlines)
        assert joined.dtype == np.float32
        assert {tuple(v) for v in joined.tolist()} == {tuple(v) for o in outlines for v in o.tolist()}
        filled = cv2.fillPoly(np.zeros(mask.shape, np.uint8), [joined.astype(np.int32)], 1).astype(bool)
        solid = cv2.fillPoly(np.zeros(mask.shape, np.uint8), [o.astype(np.int32) for o in outlines], 1).astype(bool)
        edges = cv2.polylines(np.zeros(mask.shape, np.uint8), [joined.astype(np.int32)], True, 1).astype(bool)
        assert (filled >= solid).all()  # every part, holes filled as in the outlines
        assert not (filled & ~solid & ~edges).any()  # and besides them only its own edges: the seams


def test_remove_small_regions_rejects_unknown_mode():
    with pytest.raises(ValueError, match="holes"):
        ours.remove_small_regions(np.zeros((3, 3), bool), 1, "dots")
