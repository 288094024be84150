"""Reduced precision asked for (`half=True`, a bf16 engine): segment everything decodes in bf16 where the CPU computes it.

Clicks stay fp32. Where bf16 is native (AMX, AVX-512 BF16) the batches run on a
bf16 copy of the decoder and the masks agree with fp32's to a stated bar;
elsewhere bf16 would be emulated and slower, so the batches stay fp32 and give
torch-fast's very masks.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from skimage import data

from mobilesam import SamAutomaticMaskGenerator, SamPredictor
from mobilesam.backends import make_backend
from mobilesam.backends.torch import has_native_bf16
from mobilesam.prompts import make_prompt
from reference import paired_models

NATIVE_BF16 = has_native_bf16(torch.device("cpu"))
# Each candidate's low-res mask against fp32's, mean IoU: 0.956 seen with these random weights
# (noisy masks, unlike a trained model's); predicted IoU within 0.08 seen. Margins for other CPUs.
BF16_MEAN_MASK_IOU = 0.9
BF16_SCORE_ERROR = 0.15


@pytest.fixture(scope="module")
def setting():
    model, _ = paired_models("vit_t", seed=0)
    image = data.coffee()[::2, ::2]  # 300x200: a quick grid
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # torch-bf16 warns where bf16 is emulated
        bf16 = make_backend("torch-bf16", model)
    embedding = SamPredictor(model, "torch-fast").embed(image)
    return model, image, embedding, bf16


def _records(model, backend, image, embedding):
    options = dict(points_per_side=8, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    return SamAutomaticMaskGenerator(model, backend=backend, **options).generate(image, embedding)


@pytest.mark.skipif(not NATIVE_BF16, reason="bf16 is emulated on this CPU (the other branch checks fp32 batches)")
def test_bf16_batches_agree_with_fp32(setting):
    model, image, embedding, bf16 = setting
    # Every candidate, as the generator asks for them at thresholds 0: the same prompts, compared output by output.
    points = torch.as_tensor(np.random.default_rng(0).uniform([0, 0], [1024, 682], (32, 2)))
    keep_all = lambda iou_predictions: torch.ones_like(iou_predictions, dtype=torch.bool)  # noqa: E731
    with torch.inference_mode():
        fp32 = make_backend("torch-fast", model).decode_candidates(embedding.features, points, keep_all)
        reduced = bf16.decode_candidates(embedding.features, points, keep_all)
    assert reduced.low_res_logits.dtype == reduced.iou_predictions.dtype == torch.float32
    fp32_masks, masks = fp32.low_res_logits > 0, reduced.low_res_logits > 0
    mask_iou = (fp32_masks & masks).sum((-1, -2)) / (fp32_masks | masks).sum((-1, -2)).clamp(min=1)
    score_error = (reduced.iou_predictions - fp32.iou_predictions).abs().max().item()
    print(f"bf16 batches against fp32: mean mask IoU {mask_iou.mean():.4f}, predicted IoU within {score_error:.3f}")
    assert mask_iou.mean() >= BF16_MEAN_MASK_IOU and score_error <= BF16_SCORE_ERROR
    assert not torch.equal(reduced.low_res_logits, fp32.low_res_logits), "the batches decoded in fp32"
    records = _records(model, bf16, image, embedding)
    assert records and all(record["segmentation"].shape == image.shape[:2] for record in records)


@pytest.mark.skipif(NATIVE_BF16, reason="this CPU computes bf16 (the other branch checks the agreement)")
def test_batches_stay_fp32_where_bf16_is_emulated(setting):
    model, image, embedding, bf16 = setting
    fp32_records = _records(model, "torch-fast", image, embedding)
    bf16_records = _records(model, bf16, image, embedding)
    assert len(bf16_records) == len(fp32_records)
    assert all(np.array_equal(a["segmentation"], b["segmentation"]) for a, b in zip(bf16_records, fp32_records))


def test_clicks_stay_fp32(setting):
    model, image, embedding, bf16 = setting
    prompt = make_prompt(np.array([[150.0, 100.0]]), np.array([1]))
    fp32_masks, fp32_scores, fp32_logits = SamPredictor(model, "torch-fast").decode_prompts(embedding, [prompt])
    masks, scores, logits = SamPredictor(model, bf16).decode_prompts(embedding, [prompt])
    assert logits.dtype == np.float32
    np.testing.assert_array_equal(logits, fp32_logits)
    np.testing.assert_array_equal(scores, fp32_scores)
