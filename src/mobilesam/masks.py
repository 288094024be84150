"""Mask utilities: stability score, boxes, crops, point grids, RLE, small-region clean-up, outlines.

Plain functions over tensors and arrays, shared by the automatic mask
generator, the writers and validation. RLE follows pycocotools' convention:
column-major runs that start with a run of zeros.

`encode_masks` / `encode_rles` are the one encoder of masks for every output
(Results JSON, COCO files, the service, the generator's records): RLE, box,
area and score per mask; `coco_encode_mask` is its RLE alone, for one mask.
`batched_mask_to_box` is the one box of a mask, in either convention.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from itertools import product
from typing import Any, Literal

import cv2
import numpy as np
import torch
from pycocotools import mask as mask_utils


def mask_iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """IoU of two (H, W) bool masks; 1.0 when both are empty."""
    union = np.count_nonzero(pred | gt)
    if union == 0:
        return 1.0
    return np.count_nonzero(pred & gt) / union


def calculate_stability_score(mask_logits: torch.Tensor, mask_threshold: float, threshold_offset: float) -> torch.Tensor:
    """IoU between the masks cut at `threshold + offset` and at `threshold - offset`, over the last two axes.

    The high cut is always inside the low one, so the IoU is a ratio of pixel counts.
    """
    # Sum rows in int16 and then columns in int32: exact, and half the memory of int64.
    high = (mask_logits > (mask_threshold + threshold_offset)).sum(-1, dtype=torch.int16).sum(-1, dtype=torch.int32)
    low = (mask_logits > (mask_threshold - threshold_offset)).sum(-1, dtype=torch.int16).sum(-1, dtype=torch.int32)
    return high / low


def batched_mask_to_box(masks: torch.Tensor, *, pixel_edges: bool = False) -> torch.Tensor:
    """The XYXY boxes around masks; [0, 0, 0, 0] for an empty mask.

    Args:
        masks: (..., H, W) bool masks.
        pixel_edges: False: x2, y2 are the last pixel's indices, segment_anything's boxes
            (the generator's records, `Results.boxes`, COCO's bbox). True: they are its far
            edges (last index + 1), the box drawn around the pixels, SAM's box prompt for a mask.

    Returns:
        (..., 4) int64 XYXY boxes.
    """
    if masks.numel() == 0:
        return torch.zeros(*masks.shape[:-2], 4, dtype=torch.long, device=masks.device)
    h, w = masks.shape[-2:]
    rows = masks.any(dim=-1)  # (..., H)
    cols = masks.any(dim=-2)  # (..., W)
    row_idx = torch.arange(h, device=masks.device)
    col_idx = torch.arange(w, device=masks.device)
    bottom = (rows * row_idx).amax(dim=-1)
    top = torch.where(rows, row_idx, h).amin(dim=-1)
    right = (cols * col_idx).amax(dim=-1)
    left = torch.where(cols, col_idx, w).amin(dim=-1)
    boxes = torch.stack([left, top, right, bottom], dim=-1)
    if pixel_edges:
        boxes[..., 2:] += 1
    empty = ~rows.any(dim=-1)
    return boxes * (~empty).unsqueeze(-1)


def box_xyxy_to_xywh(box: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """XYXY -> XYWH for one box (a copy)."""
    xywh = box.clone() if isinstance(box, torch.Tensor) else box.copy()
    xywh[2] = box[2] - box[0]
    xywh[3] = box[3] - box[1]
    return xywh


def uncrop_boxes_xyxy(boxes: torch.Tensor, crop_box: list[int]) -> torch.Tensor:
    """Shift (..., 4) XYXY boxes from a crop's frame to the image's."""
    x0, y0, _, _ = crop_box
    return boxes + torch.tensor([x0, y0, x0, y0], device=boxes.device)


def uncrop_points(points: torch.Tensor, crop_box: list[int]) -> torch.Tensor:
    """Shift (..., 2) XY points from a crop's frame to the image's."""
    x0, y0, _, _ = crop_box
    return points + torch.tensor([x0, y0], device=points.device)


def uncrop_masks(masks: torch.Tensor, crop_box: list[int], orig_h: int, orig_w: int) -> torch.Tensor:
    """Zero-pad (..., h, w) crop masks to (..., orig_h, orig_w) at the crop's place."""
    x0, y0, x1, y1 = crop_box
    if x0 == 0 and y0 == 0 and x1 == orig_w and y1 == orig_h:
        return masks
    pad_x, pad_y = orig_w - (x1 - x0), orig_h - (y1 - y0)
    return torch.nn.functional.pad(masks, (x0, pad_x - x0, y0, pad_y - y0), value=0)


def is_box_near_crop_edge(boxes: torch.Tensor, crop_box: list[int], orig_box: list[int], atol: float = 20.0) -> torch.Tensor:
    """(N,) True for (N, 4) crop-frame boxes that touch the crop's edge where it is not the image's edge."""
    crop = torch.as_tensor(crop_box, dtype=torch.float, device=boxes.device)
    orig = torch.as_tensor(orig_box, dtype=torch.float, device=boxes.device)
    boxes = uncrop_boxes_xyxy(boxes, crop_box).float()
    near_crop_edge = torch.isclose(boxes, crop[None, :], atol=atol, rtol=0)
    near_image_edge = torch.isclose(boxes, orig[None, :], atol=atol, rtol=0)
    return (near_crop_edge & ~near_image_edge).any(dim=1)


def build_point_grid(n_per_side: int) -> np.ndarray:
    """(n*n, 2) XY points at cell centres of an n x n grid over [0, 1]^2, row by row."""
    offset = 1 / (2 * n_per_side)
    side = np.linspace(offset, 1 - offset, n_per_side)
    xs = np.tile(side[None, :], (n_per_side, 1))
    ys = np.tile(side[:, None], (1, n_per_side))
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def build_all_layer_point_grids(n_per_side: int, n_layers: int, scale_per_layer: int) -> list[np.ndarray]:
    """One grid per crop layer; layer i has n_per_side / scale_per_layer**i points per side."""
    return [build_point_grid(int(n_per_side / (scale_per_layer**i))) for i in range(n_layers + 1)]


def generate_crop_boxes(im_size: tuple[int, ...], n_layers: int, overlap_ratio: float) -> tuple[list[list[int]], list[int]]:
    """XYXY crop boxes and their layer: the whole image, then (2**i)**2 overlapping crops for layer i."""
    im_h, im_w = im_size
    short_side = min(im_h, im_w)
    crop_boxes, layer_idxs = [[0, 0, im_w, im_h]], [0]

    def crop_len(orig_len: int, n_crops: int, overlap: int) -> int:
        return int(math.ceil((overlap * (n_crops - 1) + orig_len) / n_crops))

    for i_layer in range(n_layers):
        n_crops_per_side = 2 ** (i_layer + 1)
        overlap = int(overlap_ratio * short_side * (2 / n_crops_per_side))
        crop_w = crop_len(im_w, n_crops_per_side, overlap)
        crop_h = crop_len(im_h, n_crops_per_side, overlap)
        x0s = [int((crop_w - overlap) * i) for i in range(n_crops_per_side)]
        y0s = [int((crop_h - overlap) * i) for i in range(n_crops_per_side)]
        for x0, y0 in product(x0s, y0s):
            crop_boxes.append([x0, y0, min(x0 + crop_w, im_w), min(y0 + crop_h, im_h)])
            layer_idxs.append(i_layer + 1)
    return crop_boxes, layer_idxs


def mask_to_rle(masks: torch.Tensor) -> list[dict[str, Any]]:
    """(B, H, W) bool masks -> uncompressed RLEs {'size': [H, W], 'counts': [...]} (column-major, zeros first)."""
    h, w = masks.shape[1:]
    return [{"size": [h, w], "counts": counts.tolist()} for counts in rle_counts(masks)]


def rle_counts(masks: torch.Tensor) -> list[np.ndarray]:
    """(B, H, W) bool masks -> each one's uncompressed RLE counts as an int64 array, `mask_to_rle`'s numbers.

    Arrays, not lists: a noisy mask has tens of thousands of runs, and building
    their Python ints costs several times the encoding itself.
    """
    b, h, w = masks.shape
    columns_first = masks.permute(0, 2, 1).reshape(b, h * w).cpu().numpy()  # column-major order
    rles = []
    for flat in columns_first:
        edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
        counts = np.diff(edges, prepend=0, append=h * w)
        rles.append(np.concatenate(([0], counts)) if flat[0] else counts)
    return rles


def rle_to_mask(rle: dict[str, Any]) -> np.ndarray:
    """Uncompressed RLE -> (H, W) bool mask."""
    h, w = rle["size"]
    counts = np.asarray(rle["counts"], dtype=np.int64)
    values = np.arange(len(counts)) % 2 == 1
    return np.repeat(values, counts).reshape(w, h).transpose()


def area_from_rle(rle: dict[str, Any]) -> int:
    """Number of foreground pixels of an uncompressed RLE (counts a list or an array)."""
    counts = rle["counts"]
    return int(counts[1::2].sum()) if isinstance(counts, np.ndarray) else sum(counts[1::2])


def coco_encode_rle(uncompressed_rle: dict[str, Any]) -> dict[str, Any]:
    """Uncompressed RLE -> COCO compressed RLE with `counts` as str (JSON-ready), via pycocotools."""
    h, w = uncompressed_rle["size"]
    rle = mask_utils.frPyObjects(uncompressed_rle, h, w)
    rle["counts"] = rle["counts"].decode("utf-8")
    return rle


def coco_encode_mask(mask: np.ndarray) -> dict[str, Any]:
    """(H, W) bool mask -> COCO compressed RLE with `counts` as str: the RLE `encode_masks` gives it."""
    return coco_encode_rle(mask_to_rle(torch.from_numpy(np.ascontiguousarray(mask, dtype=bool))[None])[0])


def coco_decode_rle(rle: dict[str, Any]) -> np.ndarray:
    """COCO compressed RLE (counts str or bytes) -> (H, W) bool mask, via pycocotools."""
    counts = rle["counts"]
    encoded = {"size": list(rle["size"]), "counts": counts.encode("utf-8") if isinstance(counts, str) else counts}
    return mask_utils.decode(encoded).astype(bool)


def remove_small_regions(mask: np.ndarray, area_thresh: float, mode: Literal["holes", "islands"]) -> tuple[np.ndarray, bool]:
    """Fill holes or remove islands smaller than `area_thresh` (8-connectivity).

    When every island is too small the largest is kept. Returns the mask and
    whether it changed.
    """
    if mode not in ("holes", "islands"):
        raise ValueError(f"mode must be 'holes' or 'islands', got {mode!r}")
    correct_holes = mode == "holes"
    working = (correct_holes ^ mask).astype(np.uint8)
    n_labels, regions, stats, _ = cv2.connectedComponentsWithStats(working, 8)
    sizes = stats[1:, -1]  # label 0 is the background
    small = [i + 1 for i, size in enumerate(sizes) if size < area_thresh]
    if not small:
        return mask, False
    fill_labels = [0, *small]
    if not correct_holes:
        fill_labels = [i for i in range(n_labels) if i not in fill_labels]
        if not fill_labels:
            fill_labels = [int(np.argmax(sizes)) + 1]
    return np.isin(regions, fill_labels), True


def mask_to_polygons(mask: np.ndarray) -> list[np.ndarray]:
    """Outer outlines of the parts of a mask, largest part first.

    Holes are not traced: both YOLO-seg and LabelMe polygons are filled
    outlines. Vertices are the centres of the boundary pixels (OpenCV's
    convention, the one Ultralytics and LabelMe rasterise back from), with
    collinear runs collapsed (`CHAIN_APPROX_SIMPLE`).

    Args:
        mask: (H, W) bool or 0/1 mask.

    Returns:
        One (K, 2) float64 XY array per external contour with K >= 3 (fewer
        points enclose no area), sorted by enclosed area, descending. Empty for
        an empty mask.
    """
    contours, _ = cv2.findContours(np.ascontiguousarray(mask, dtype=np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polygons = [contour.reshape(-1, 2).astype(np.float64) for contour in contours if len(contour) >= 3]
    return sorted(polygons, key=lambda polygon: -cv2.contourArea(polygon.astype(np.float32)))


def join_outlines(outlines: list[np.ndarray]) -> np.ndarray:
    """One polygon through all `outlines`, Ultralytics' polygon for a mask in several parts.

    Each outline is linked to the next at their closest pair of vertices. The
    path goes out along the chain (first and last outlines all the way round,
    the others from the vertex it arrived at to the one leaving for the next)
    and comes back over the rest of each outline, so every link is a seam
    walked once each way and the polygon encloses the parts and nothing else.

    Args:
        outlines: (K_i, 2) XY outlines, as `mask_to_polygons` gives them.

    Returns:
        (K, 2) float32 XY polygon; (0, 2) for no outline.
    """
    if len(outlines) < 2:
        return outlines[0].astype(np.float32) if outlines else np.zeros((0, 2), dtype=np.float32)
    # links[i]: (vertex of outline i, vertex of outline i + 1) closest to each other.
    links = [_closest_vertices(a, b) for a, b in zip(outlines[:-1], outlines[1:])]
    last = len(outlines) - 1
    out, back = [], []
    for i, outline in enumerate(outlines):
        entry = links[0][0] if i == 0 else links[i - 1][1]
        loop = np.roll(outline, -entry, axis=0)  # starts at the entry vertex
        if i in (0, last):
            out.append(np.concatenate([loop, loop[:1]]))
            continue
        leave = (links[i][0] - entry) % len(outline)
        out.append(loop[: leave + 1])
        back.append(np.concatenate([loop[leave:], loop[:1]]))
    return np.concatenate(out + back[::-1]).astype(np.float32)


def _closest_vertices(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    distances = ((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=-1)  # (len(a), len(b))
    i, j = np.unravel_index(int(np.argmin(distances)), distances.shape)
    return int(i), int(j)


@dataclass(frozen=True)
class EncodedMask:
    """One mask as every output format writes it.

    Attributes:
        uncompressed_rle: {'size': [H, W], 'counts': [...]}, column-major runs starting with zeros.
        area: Pixels in the mask.
        box: XYXY around the mask, inclusive pixel indices ((0, 0, 0, 0) for an empty
            mask); ints when computed from the mask, else the values given.
        score: The mask's score (predicted IoU).
    """

    uncompressed_rle: dict[str, Any]
    area: int
    box: tuple[float, float, float, float]
    score: float

    @cached_property
    def rle(self) -> dict[str, Any]:
        """COCO compressed RLE with `counts` as str (JSON-ready)."""
        return coco_encode_rle(self.uncompressed_rle)

    @property
    def bbox(self) -> list[float]:
        """XYWH as segment_anything reports it: width x2 - x1, so a one-pixel mask has width 0."""
        x1, y1, x2, y2 = self.box
        return [x1, y1, x2 - x1, y2 - y1]

    @property
    def coco_bbox(self) -> list[float]:
        """XYWH as COCO tools compute it (`pycocotools.mask.toBbox`): widths count pixels, x2 - x1 + 1."""
        if self.area == 0:
            return [0.0, 0.0, 0.0, 0.0]
        x1, y1, x2, y2 = (float(v) for v in self.box)
        return [x1, y1, x2 - x1 + 1, y2 - y1 + 1]


def encode_masks(
    masks: torch.Tensor | np.ndarray,
    scores: torch.Tensor | np.ndarray | Sequence[float],
    boxes: torch.Tensor | np.ndarray | None = None,
) -> list[EncodedMask]:
    """Encode masks: RLE, box, area and score each, in mask order.

    Args:
        masks: (N, H, W) bool masks.
        scores: (N,) a score per mask.
        boxes: (N, 4) XYXY boxes to report instead of computing them from the masks.

    Returns:
        One `EncodedMask` per mask.

    Raises:
        ValueError: `masks` is not (N, H, W), or `scores` / `boxes` do not have N rows.
    """
    masks_t = torch.as_tensor(masks)
    if masks_t.ndim != 3:
        raise ValueError(f"masks must be (N, H, W), got shape {tuple(masks_t.shape)}")
    return encode_rles(mask_to_rle(masks_t), batched_mask_to_box(masks_t) if boxes is None else boxes, scores)


def encode_rles(
    rles: Sequence[dict[str, Any]],
    boxes: torch.Tensor | np.ndarray,
    scores: torch.Tensor | np.ndarray | Sequence[float],
) -> list[EncodedMask]:
    """Encode masks already run-length encoded (`mask_to_rle`), with their XYXY boxes.

    Args:
        rles: N uncompressed RLEs.
        boxes: (N, 4) XYXY boxes around the masks (`batched_mask_to_box`).
        scores: (N,) a score per mask.

    Returns:
        One `EncodedMask` per mask; boxes keep their type (ints from `batched_mask_to_box`).

    Raises:
        ValueError: `boxes` or `scores` do not have one row per RLE.
    """
    box_rows = _as_list(boxes)
    score_list = [float(score) for score in _as_list(scores)]
    if not len(box_rows) == len(score_list) == len(rles):
        raise ValueError(
            f"need one box and one score per mask: {len(rles)} masks, {len(box_rows)} boxes, {len(score_list)} scores"
        )
    return [
        EncodedMask(uncompressed_rle=rle, area=area_from_rle(rle), box=tuple(box), score=score)
        for rle, box, score in zip(rles, box_rows, score_list)
    ]


def _as_list(values: torch.Tensor | np.ndarray | Sequence[Any]) -> list[Any]:
    # tolist() gives Python numbers of the stored values: ints stay ints, float32 widens exactly.
    return values.tolist() if isinstance(values, (torch.Tensor, np.ndarray)) else list(values)


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """torchvision's NMS (the reference's, so ties break the same way), imported on first use.

    Importing torchvision.ops loads torch._dynamo, about 2.5 s; commands that
    never segment everything should not wait for it.
    """
    from torchvision.ops import batched_nms as torchvision_batched_nms

    return torchvision_batched_nms(boxes, scores, idxs, iou_threshold=iou_threshold)
