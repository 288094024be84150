"""Segment everything: our generator against the reference's, same model, same image, same run.

    python benchmarks/everything.py [--image PATH] [--checkpoint mobile_sam.pt] [--threads 2] [--repeats 3]
                                    [--pred-iou-thresh 0.88] [--stability-score-thresh 0.95] [--half]

Without a checkpoint both run at the same seeded random weights. Random
weights reject every candidate at the default thresholds, half of them at the
IoU filter, where our generator saves the most; a real checkpoint keeps more
masks, so pass one when you have it, or lower both thresholds to send every
candidate through upscaling, NMS and encoding. Both generators must give the
same masks, or the timing is void: the same number, in the same order, each
pair at mask IoU >= 0.999 or at most `FLIPPED_PIXELS` pixels apart (identical
where both run the same kernels; our fast decoding sums in another order, so a
pixel whose logit lies within fp32 rounding of the threshold may flip, which
decides the IoU of a mask of a few dozen pixels; see tests/tolerance.py).

With `--half` ours runs `half=True`'s engine, which decodes the batches in
bf16 where the CPU computes it natively: the masks then differ, and their
agreement is printed instead (how many, and each reference mask's best IoU
among ours).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from skimage import data

from mobilesam import SamAutomaticMaskGenerator, load_sam
from mobilesam.backends import make_backend
from mobilesam.bench import machine_summary
from mobilesam.io.images import load_image

# The oracle helpers live with the tests: the reference package and seeded weights.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from reference import mobile_sam, paired_models, sync_reference

# Pixels a mask pair may differ by and still match: logits within rounding of the threshold.
FLIPPED_PIXELS = 2


def _models(checkpoint: str | None) -> tuple[torch.nn.Module, torch.nn.Module]:
    if not checkpoint:
        return paired_models("vit_t", seed=0)
    ours = load_sam(checkpoint)
    return ours, sync_reference(mobile_sam.sam_model_registry["vit_t"](), ours)


def _time(generate, image: np.ndarray, repeats: int) -> tuple[float, list[dict]]:
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        records = generate(image)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), records


def _agreement(ours: list[dict], theirs: list[dict]) -> tuple[int, float, int, bool]:
    """(pixel-identical masks, lowest mask IoU, most pixels apart, every pair matches) over the records paired in order."""
    identical, lowest, most_apart, matches = 0, 1.0, 0, True
    for a, b in zip(ours, theirs):
        union = np.logical_or(a["segmentation"], b["segmentation"]).sum()
        iou = np.logical_and(a["segmentation"], b["segmentation"]).sum() / union if union else 1.0
        apart = int(np.logical_xor(a["segmentation"], b["segmentation"]).sum())
        lowest, most_apart = min(lowest, iou), max(most_apart, apart)
        matches &= bool(iou >= 0.999 or apart <= FLIPPED_PIXELS)
        identical += apart == 0
    return identical, float(lowest), most_apart, matches


def _best_ious(ours: list[dict], theirs: list[dict]) -> list[float]:
    """Each of `theirs` masks' highest IoU with any of `ours`."""
    if not ours:
        return [0.0] * len(theirs)
    stacked = np.stack([record["segmentation"] for record in ours])
    best = []
    for record in theirs:
        inter = np.logical_and(stacked, record["segmentation"]).sum(axis=(1, 2))
        union = np.logical_or(stacked, record["segmentation"]).sum(axis=(1, 2))
        best.append(float((inter / np.maximum(union, 1)).max()))
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", help="image file (default: skimage astronaut, 512x512)")
    parser.add_argument("--checkpoint", help="MobileSAM checkpoint (default: seeded random weights)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--points-per-side", type=int, default=32)
    parser.add_argument("--pred-iou-thresh", type=float, default=0.88)
    parser.add_argument("--stability-score-thresh", type=float, default=0.95)
    parser.add_argument("--half", action="store_true", help="ours with half=True (bf16 batches where native)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    image = load_image(Path(args.image)) if args.image else data.astronaut()
    ours, reference = _models(args.checkpoint)
    options = dict(
        points_per_side=args.points_per_side,
        pred_iou_thresh=args.pred_iou_thresh,
        stability_score_thresh=args.stability_score_thresh,
    )
    backend = make_backend("auto", ours, half=args.half)
    our_generator = SamAutomaticMaskGenerator(ours, backend=backend, **options)
    ref_generator = mobile_sam.SamAutomaticMaskGenerator(reference, **options)

    with torch.inference_mode():
        our_generator.generate(image)  # warm-up: allocator, oneDNN kernels
        ref_s, ref_records = _time(ref_generator.generate, image, args.repeats)
        our_s, our_records = _time(our_generator.generate, image, args.repeats)

    identical, lowest_iou, most_apart, matches = _agreement(our_records, ref_records)
    same = len(our_records) == len(ref_records) and matches
    print(f"machine: {machine_summary()}; ours on {backend.name}")
    print(
        f"image {image.shape[1]}x{image.shape[0]}, {args.points_per_side}x{args.points_per_side} points, "
        f"{args.threads} threads, weights: {args.checkpoint or 'seeded random'}, median of {args.repeats}, "
        f"pred_iou_thresh {args.pred_iou_thresh}, stability_score_thresh {args.stability_score_thresh}"
    )
    print(f"{'generator':<12}{'seconds':>10}{'masks':>8}")
    print(f"{'reference':<12}{ref_s:>10.2f}{len(ref_records):>8}")
    print(f"{'mobilesam':<12}{our_s:>10.2f}{len(our_records):>8}")
    if args.half:
        best = _best_ious(our_records, ref_records)
        mean_best = f"{statistics.mean(best):.4f}" if best else "-"
        print(
            f"speed-up {ref_s / our_s:.2f}x; {len(our_records)} masks against {len(ref_records)}, each reference "
            f"mask's best IoU among ours: mean {mean_best}, {sum(iou >= 0.9 for iou in best)} at 0.9 or more"
        )
        return 0
    print(
        f"speed-up {ref_s / our_s:.2f}x; masks pixel-identical: {identical} of {len(ref_records)}, "
        f"lowest IoU {lowest_iou:.5f}, at most {most_apart} pixels apart, same masks: {same}"
    )
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
