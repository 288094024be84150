"""`mobilesam.SamAutomaticMaskGenerator` against `mobile_sam.SamAutomaticMaskGenerator` at the same random weights.

Where both decode with the same kernels on the same shapes (one prompt per
batch, one thread), the records are identical: the same masks in the same
order, pixel for pixel. Elsewhere our batched decoder rounds differently
from the reference's (`tolerance`), so a candidate whose score, stability or
box overlap sits within rounding of a threshold may be kept by one and not
the other: masks are then matched one to one per prompt, every matched pair
must overlap at IoU >= 0.999, and only candidates near a threshold may be
unmatched; they are counted and printed.
"""

from __future__ import annotations

import inspect
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from images import sample_images
from mobilesam import ImageEmbedding, SamAutomaticMaskGenerator, SamPredictor
from reference import mobile_sam, paired_models

TOL = 1e-5
# A matched pair: the same prompt's mask on both sides, a few pixels apart at most.
MATCH_IOU = 0.999
# Near a threshold: a score within 1e-3 (logits drift by ~1e-5; stability moves
# by one pixel's share of a mask), a box IoU within 0.02 (one pixel of a 50-pixel box).
SCORE_MARGIN = 1e-3
BOX_IOU_MARGIN = 0.02
_GENERATOR_DEFAULTS = {
    name: parameter.default for name, parameter in inspect.signature(SamAutomaticMaskGenerator).parameters.items()
}
# Random weights give unstable masks spread over the whole image, so their
# boxes nearly coincide: these thresholds keep enough masks to compare while
# the IoU and stability filters still reject some, and box NMS then drops
# only exact duplicates (NMS at the usual thresholds is tested separately).
LOW_THRESHOLDS = dict(pred_iou_thresh=0.5, stability_score_thresh=0.2, box_nms_thresh=1.0)


@pytest.fixture(scope="module")
def models():
    return paired_models("vit_t", seed=5)


class _Embeddings:
    """Each image goes through each encoder once per module; these tests are about the decoder side.

    Ours takes the embedding explicitly (`generate(image, embedding=...)`).
    The reference's generator calls its predictor's `set_image` itself, so
    the reference's cache answers there, filling the fields its `set_image` fills.
    """

    def __init__(self, model) -> None:
        self._predictor = SamPredictor(model, backend="torch")
        self._ours: dict[bytes, ImageEmbedding] = {}
        self._reference: dict[bytes, tuple] = {}

    def ours(self, image: np.ndarray) -> ImageEmbedding:
        key = _key(image)
        if key not in self._ours:
            self._ours[key] = self._predictor.embed(image)
        return self._ours[key]

    def install_reference(self, ref_generator) -> None:
        predictor, set_image, store = ref_generator.predictor, ref_generator.predictor.set_image, self._reference

        def cached(image, image_format="RGB"):
            key = _key(image)
            if key not in store:
                set_image(image, image_format)
                store[key] = (predictor.features, predictor.original_size, predictor.input_size)
            predictor.reset_image()
            predictor.features, predictor.original_size, predictor.input_size = store[key]
            predictor.is_image_set = True

        predictor.set_image = cached


def _key(image: np.ndarray) -> bytes:
    return image.tobytes() + bytes(str(image.shape), "ascii")


@pytest.fixture(scope="module")
def embeddings(models):
    return _Embeddings(models[0])


def _generate(models, image: np.ndarray, embeddings: _Embeddings, **options) -> tuple[list[dict], list[dict]]:
    ours, reference = models
    ref_generator = mobile_sam.SamAutomaticMaskGenerator(reference, **options)
    embeddings.install_reference(ref_generator)
    our_records = SamAutomaticMaskGenerator(ours, backend="torch", **options).generate(image, embedding=embeddings.ours(image))
    return our_records, ref_generator.generate(image)


def _decode(segmentation, output_mode: str) -> np.ndarray:
    if output_mode == "binary_mask":
        return segmentation
    if output_mode == "coco_rle":
        return mask_utils.decode(segmentation).astype(bool)
    h, w = segmentation["size"]
    flat = np.concatenate([np.full(n, i % 2, dtype=bool) for i, n in enumerate(segmentation["counts"])])
    return flat.reshape(w, h).T


def _box_iou(a: list[float], b: list[float]) -> float:
    """IoU of two XYWH boxes."""
    w = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    union = a[2] * a[3] + b[2] * b[3] - w * h
    return w * h / union if union > 0 else 1.0


def _mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def _near_a_threshold(record: dict, others: list[dict], options: dict) -> str | None:
    """Why `record` may be kept on one side only, or None if it is clear of every threshold."""
    pred_iou_thresh, stability_thresh, nms_thresh = (
        options.get(name, _GENERATOR_DEFAULTS[name]) for name in ("pred_iou_thresh", "stability_score_thresh", "box_nms_thresh")
    )
    if pred_iou_thresh > 0 and record["predicted_iou"] - pred_iou_thresh <= SCORE_MARGIN:
        return "predicted IoU"
    if stability_thresh > 0 and record["stability_score"] - stability_thresh <= SCORE_MARGIN:
        return "stability"
    # NMS drops a box whose IoU with a better one exceeds the threshold: never at 1.0.
    if nms_thresh < 1.0 and any(
        abs(_box_iou(record["bbox"], other["bbox"]) - nms_thresh) <= BOX_IOU_MARGIN for other in others if other is not record
    ):
        return "box NMS"
    return None


def _assert_matching_records(ours: list[dict], theirs: list[dict], options: dict, output_mode: str = "binary_mask") -> None:
    """Identical records, or a one-to-one match of masks that only candidates near a threshold escape."""
    if len(ours) == len(theirs) and all(_same_record(our, ref) for our, ref in zip(ours, theirs)):
        print(f"{len(ours)} masks, identical to the reference's")
        return
    our_masks = [_decode(record["segmentation"], output_mode) for record in ours]
    ref_masks = [_decode(record["segmentation"], output_mode) for record in theirs]
    pairs = sorted(
        (
            (_mask_iou(our_masks[i], ref_masks[j]), i, j)
            for i, our in enumerate(ours)
            for j, ref in enumerate(theirs)
            if our["crop_box"] == ref["crop_box"] and np.allclose(our["point_coords"], ref["point_coords"], rtol=0, atol=1e-9)
        ),
        reverse=True,
    )
    matched_ours, matched_theirs, lowest = set(), set(), 1.0
    for iou, i, j in pairs:
        if iou < MATCH_IOU:
            break
        if i in matched_ours or j in matched_theirs:
            continue
        matched_ours.add(i)
        matched_theirs.add(j)
        lowest = min(lowest, iou)
        np.testing.assert_allclose(ours[i]["predicted_iou"], theirs[j]["predicted_iou"], rtol=0, atol=TOL)
        np.testing.assert_allclose(ours[i]["stability_score"], theirs[j]["stability_score"], rtol=0, atol=SCORE_MARGIN)
        assert our_masks[i].sum() == ours[i]["area"]
    everyone = ours + theirs
    unmatched = [("ours", ours[i]) for i in range(len(ours)) if i not in matched_ours]
    unmatched += [("reference", theirs[j]) for j in range(len(theirs)) if j not in matched_theirs]
    reasons = [(side, record, _near_a_threshold(record, everyone, options)) for side, record in unmatched]
    print(
        f"{len(matched_ours)} masks matched the reference's (lowest IoU {lowest:.5f}); "
        f"{len(unmatched)} near a threshold kept by one side only: "
        + ", ".join(f"{side} {reason}" for side, _, reason in reasons)
    )
    far = [(side, record["predicted_iou"], record["stability_score"]) for side, record, reason in reasons if reason is None]
    assert not far, f"unmatched masks clear of every threshold (side, predicted IoU, stability): {far}"
    assert len(unmatched) <= max(2, len(theirs) // 10), f"{len(unmatched)} of {len(theirs)} masks unmatched"


def _same_record(our: dict, ref: dict) -> bool:
    segmentation_equal = (
        np.array_equal(our["segmentation"], ref["segmentation"])
        if isinstance(our["segmentation"], np.ndarray)
        else our["segmentation"] == ref["segmentation"]
    )
    same_numbers = all(
        np.array_equal(our[key], ref[key], equal_nan=True) for key in ("point_coords", "predicted_iou", "stability_score")
    )
    return segmentation_equal and same_numbers and all(our[key] == ref[key] for key in ("bbox", "area", "crop_box"))


def _assert_same_records(ours: list[dict], theirs: list[dict], output_mode: str = "binary_mask") -> None:
    assert len(ours) == len(theirs)
    for i, (our, ref) in enumerate(zip(ours, theirs)):
        assert our.keys() == ref.keys()
        if output_mode == "binary_mask":
            assert our["segmentation"].dtype == ref["segmentation"].dtype == np.bool_
            assert np.array_equal(our["segmentation"], ref["segmentation"]), f"mask {i}"
        else:
            # Encodings equal exactly: the same RLE dict (coco counts as bytes or str alike).
            assert our["segmentation"] == ref["segmentation"], f"rle {i}"
        assert our["area"] == ref["area"] and isinstance(our["area"], int)
        assert our["bbox"] == ref["bbox"], f"bbox {i}"
        assert our["crop_box"] == ref["crop_box"]
        np.testing.assert_allclose(our["point_coords"], ref["point_coords"], rtol=0, atol=1e-9)
        np.testing.assert_allclose(our["predicted_iou"], ref["predicted_iou"], rtol=0, atol=TOL)
        # An empty mask's stability score is 0/0 in both: NaN counts as equal here.
        np.testing.assert_allclose(our["stability_score"], ref["stability_score"], rtol=0, atol=TOL)
        mask = _decode(our["segmentation"], output_mode)
        assert mask.sum() == our["area"]


def test_low_thresholds_match_reference(models, embeddings):
    options = dict(LOW_THRESHOLDS, points_per_side=6)
    ours, theirs = _generate(models, sample_images()["astronaut"], embeddings, **options)
    assert 10 <= len(theirs) < 6 * 6 * 3, "thresholds should keep some masks and reject some"
    _assert_matching_records(ours, theirs, options)


def test_one_prompt_per_batch_on_one_thread_is_identical(models, embeddings, one_thread):
    # One prompt per batch and one thread: our decoder runs the reference's
    # kernels on the reference's shapes, so the records are the same bits.
    options = dict(LOW_THRESHOLDS, points_per_side=4, points_per_batch=1)
    ours, theirs = _generate(models, sample_images()["astronaut"], embeddings, **options)
    assert len(theirs) > 0
    _assert_same_records(ours, theirs)


def test_box_nms_matches_reference(models, embeddings):
    image = sample_images()["generated"]
    options = dict(LOW_THRESHOLDS, points_per_side=6)
    generator = SamAutomaticMaskGenerator(models[0], backend="torch", **options)
    without_nms = generator.generate(image, embedding=embeddings.ours(image))
    options = dict(options, box_nms_thresh=0.7)
    ours, theirs = _generate(models, image, embeddings, **options)
    assert 1 <= len(ours) < len(without_nms)
    _assert_matching_records(ours, theirs, options)


@pytest.mark.parametrize(
    ("points_per_side", "points_per_batch"),
    [(5, 8), (4, 3)],
)
def test_any_batching_matches_reference(models, embeddings, points_per_side, points_per_batch):
    # A batch that does not divide the grid (25 = 3 * 8 + 1: the reference's
    # last batch holds one prompt) and small ones: our decoder splits and regroups prompts differently
    # from the reference, without changing a bit.
    options = dict(
        points_per_side=points_per_side,
        points_per_batch=points_per_batch,
        pred_iou_thresh=0.0,
        stability_score_thresh=0.0,
        box_nms_thresh=1.0,
    )
    ours, theirs = _generate(models, sample_images()["generated"], embeddings, **options)
    assert len(ours) > 0
    _assert_matching_records(ours, theirs, options)


def test_output_modes_match_reference(models, embeddings):
    # One reference run in its native RLE form; its own helpers give the other two modes.
    ours, reference = models
    image = sample_images()["generated"]
    options = dict(points_per_side=4, **LOW_THRESHOLDS)
    ref_generator = mobile_sam.SamAutomaticMaskGenerator(reference, output_mode="uncompressed_rle", **options)
    embeddings.install_reference(ref_generator)
    ref_records = ref_generator.generate(image)
    assert len(ref_records) > 0
    for mode in ("binary_mask", "uncompressed_rle", "coco_rle"):
        our_generator = SamAutomaticMaskGenerator(ours, output_mode=mode, backend="torch", **options)
        our_records = our_generator.generate(image, embedding=embeddings.ours(image))
        expected = [dict(record, segmentation=_from_reference_rle(record["segmentation"], mode)) for record in ref_records]
        _assert_matching_records(our_records, expected, options, mode)


def _from_reference_rle(rle: dict, output_mode: str):
    if output_mode == "binary_mask":
        return mobile_sam.utils.amg.rle_to_mask(rle)
    if output_mode == "coco_rle":
        return mobile_sam.utils.amg.coco_encode_rle(rle)
    return rle


def test_min_mask_region_area_matches_reference(models, embeddings):
    options = dict(points_per_side=4, min_mask_region_area=400, **LOW_THRESHOLDS)
    ours, theirs = _generate(models, sample_images()["chelsea"], embeddings, **options)
    assert len(ours) > 0
    _assert_matching_records(ours, theirs, options)


@pytest.mark.slow
def test_denser_grid_with_box_nms_matches_reference(models, embeddings):
    # A 10 x 10 grid gives boxes that differ by a few pixels; NMS just below
    # IoU 1 keeps several of them, so the order of survivors is checked too.
    options = dict(LOW_THRESHOLDS, points_per_side=10, box_nms_thresh=0.995)
    ours, theirs = _generate(models, sample_images()["coffee"], embeddings, **options)
    assert len(ours) >= 2
    _assert_matching_records(ours, theirs, options)


@pytest.mark.slow
def test_crop_layers_match_reference(models, embeddings):
    # At random weights a mask fills its whole crop, so the edge filter drops
    # every sub-crop mask; this still runs each crop through the encoder and
    # decoder and checks the cross-crop NMS against the reference.
    options = dict(points_per_side=4, crop_n_layers=1, crop_n_points_downscale_factor=2, **LOW_THRESHOLDS)
    ours, theirs = _generate(models, sample_images()["generated"], embeddings, **options)
    assert len(ours) > 0
    _assert_matching_records(ours, theirs, options)


@pytest.mark.slow
def test_default_thresholds_match_reference(models, embeddings):
    # The default thresholds and NMS; an 8 x 8 grid instead of 32 x 32 keeps
    # the reference's run short (its decoder takes ~0.15 s per prompt here).
    options = dict(points_per_side=8)
    ours, theirs = _generate(models, sample_images()["chelsea"], embeddings, **options)
    _assert_matching_records(ours, theirs, options)


def test_explicit_point_grid(models):
    ours, _ = models
    grid = np.array([[0.25, 0.25], [0.5, 0.5], [0.75, 0.6]])
    records = SamAutomaticMaskGenerator(
        ours, points_per_side=None, point_grids=[grid], pred_iou_thresh=0.0, stability_score_thresh=0.0
    ).generate(sample_images()["chelsea"])
    h, w = sample_images()["chelsea"].shape[:2]
    prompts = {tuple(record["point_coords"][0]) for record in records}
    assert prompts <= {(x * w, y * h) for x, y in grid}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(points_per_side=None), "exactly one of points_per_side and point_grids"),
        (dict(point_grids=[np.zeros((1, 2))]), "exactly one of points_per_side and point_grids"),
        (dict(output_mode="png"), "output_mode must be one of"),
        (dict(points_per_batch=0), "points_per_batch must be at least 1"),
        (dict(crop_n_layers=-1), "crop_n_layers must be >= 0"),
        (dict(points_per_side=0), "points_per_side must be at least 1"),
        (dict(points_per_side=4, crop_n_layers=1, crop_n_points_downscale_factor=8), "no points in crop layer 1"),
        (dict(points_per_side=None, point_grids=[np.zeros((1, 2))], crop_n_layers=1), "one grid per crop layer"),
        (dict(points_per_side=None, point_grids=[np.full((1, 2), 1.5)]), "point_grids must hold non-empty"),
        (dict(box_nms_thresh=1.5), "box_nms_thresh is a box IoU and must lie in"),
        (dict(crop_nms_thresh=-0.1), "crop_nms_thresh is a box IoU"),
        (dict(crop_overlap_ratio=1.0), "crop_overlap_ratio must lie in"),
        (dict(pred_iou_thresh=float("nan")), "pred_iou_thresh must be a finite number"),
        (dict(min_mask_region_area=-5), "min_mask_region_area must be >= 0"),
        (dict(crop_n_points_downscale_factor=0), "crop_n_points_downscale_factor must be at least 1"),
    ],
)
def test_bad_options_are_refused(models, options, message):
    ours, _ = models
    with pytest.raises(ValueError, match=message):
        SamAutomaticMaskGenerator(ours, backend="torch", **options)


def test_parallel_batches_restore_the_thread_count(models, embeddings):
    # Several batches run on one-thread workers; torch's global thread count
    # must come back, also when two generators overlap.
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        generators = [
            SamAutomaticMaskGenerator(models[0], points_per_side=3, points_per_batch=3, backend="torch", **LOW_THRESHOLDS)
            for _ in range(2)
        ]
        image = sample_images()["generated"]
        embedding = embeddings.ours(image)
        alone = generators[0].generate(image, embedding=embedding)
        assert torch.get_num_threads() == 2
        with ThreadPoolExecutor(2) as pool:
            overlapping = list(pool.map(lambda generator: generator.generate(image, embedding=embedding), generators))
        assert torch.get_num_threads() == 2
        for records in overlapping:
            _assert_same_records(records, alone)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("mistake", ["a mask shifted by two pixels", "a confident mask dropped"])
def test_the_record_matching_catches_small_mistakes(models, embeddings, mistake):
    options = dict(LOW_THRESHOLDS, points_per_side=4)
    generator = SamAutomaticMaskGenerator(models[0], backend="torch", **options)
    image = sample_images()["generated"]
    records = generator.generate(image, embedding=embeddings.ours(image))
    mutated = [dict(record) for record in records]
    if mistake == "a mask shifted by two pixels":
        mutated[0]["segmentation"] = np.roll(mutated[0]["segmentation"], 2, axis=1)
    else:
        clear = [i for i, record in enumerate(records) if _near_a_threshold(record, records, options) is None]
        del mutated[clear[0]]
    with pytest.raises(AssertionError):
        _assert_matching_records(mutated, records, options)


def test_an_embedding_of_another_image_is_refused(models, embeddings):
    images = sample_images()
    generator = SamAutomaticMaskGenerator(models[0], points_per_side=2, backend="torch")
    with pytest.raises(ValueError, match=r"the embedding is of a 457x123 image resized to .* but the image is 451x300"):
        generator.generate(images["chelsea"], embedding=embeddings.ours(images["generated"]))


def test_every_entry_point_takes_the_generator_defaults_from_one_table():
    import dataclasses

    from mobilesam.automatic import GENERATOR_DEFAULTS
    from mobilesam.server.schemas import EverythingRequest
    from mobilesam.val import evaluate

    assert dataclasses.asdict(GENERATOR_DEFAULTS) == {
        name: parameter.default
        for name, parameter in inspect.signature(SamAutomaticMaskGenerator).parameters.items()
        if name in {field.name for field in dataclasses.fields(GENERATOR_DEFAULTS)}
    }
    assert EverythingRequest().model_dump() == dataclasses.asdict(GENERATOR_DEFAULTS)
    evaluate_defaults = {name: p.default for name, p in inspect.signature(evaluate).parameters.items()}
    assert all(evaluate_defaults[name] == getattr(GENERATOR_DEFAULTS, name) for name in ("points_per_side", "pred_iou_thresh"))
    # segment_anything's values, which the generator's drop-in promise depends on.
    assert (
        GENERATOR_DEFAULTS.points_per_side,
        GENERATOR_DEFAULTS.pred_iou_thresh,
        GENERATOR_DEFAULTS.stability_score_thresh,
    ) == (32, 0.88, 0.95)
