"""`SamAutomaticMaskGenerator`: "segment everything" with a grid of point prompts.

Gives the same masks, in the same order, as `segment_anything`'s generator,
but works in the order that throws rejected candidates away first: the IoU
head runs before any mask is upscaled, masks are upscaled only for the
prompts that still have a candidate, and only surviving candidates are
brought to full resolution for the stability score and RLE encoding.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

import numpy as np
import torch

from .backends import Backend
from .embedding import ImageEmbedding
from .embedding_store import EmbeddingStore
from .fast_decoder import postprocess_masks as fast_postprocess
from .io.images import to_rgb_uint8
from .masks import (
    batched_mask_to_box,
    batched_nms,
    box_xyxy_to_xywh,
    build_all_layer_point_grids,
    calculate_stability_score,
    encode_rles,
    generate_crop_boxes,
    is_box_near_crop_edge,
    remove_small_regions,
    rle_counts,
    rle_to_mask,
    uncrop_boxes_xyxy,
    uncrop_masks,
    uncrop_points,
)
from .modeling import Sam
from .predictor import SamPredictor
from .transforms import get_preprocess_shape

OutputMode = Literal["binary_mask", "uncompressed_rle", "coco_rle"]
_OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")
# Full-resolution logits are made this many masks at a time: few enough that the
# temporaries (4 MiB per mask at 1024x1024) are reused from the heap, not fresh pages.
_UPSCALE_CHUNK = 4


@dataclass(frozen=True)
class GeneratorOptions:
    """The generator's numeric options; `GENERATOR_DEFAULTS` holds segment_anything's defaults.

    The one table of them: the generator's signature, the CLI, the service's
    request schema and `val` all take their defaults from it.
    """

    points_per_side: int = 32
    points_per_batch: int = 64
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    box_nms_thresh: float = 0.7
    crop_n_layers: int = 0
    crop_nms_thresh: float = 0.7
    crop_overlap_ratio: float = 512 / 1500
    crop_n_points_downscale_factor: int = 1
    min_mask_region_area: int = 0


GENERATOR_DEFAULTS = GeneratorOptions()


@dataclass
class _Candidates:
    """Masks under consideration, one row each; filtered and concatenated together.

    `rles` are uncompressed RLEs whose counts are arrays (`_encode`): lists are made
    only for the masks returned.
    """

    rles: list[dict[str, Any]] = field(default_factory=list)
    boxes: torch.Tensor = field(default_factory=lambda: torch.zeros((0, 4), dtype=torch.long))  # XYXY
    iou_preds: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    points: torch.Tensor = field(default_factory=lambda: torch.zeros((0, 2), dtype=torch.float64))
    stability_score: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    crop_boxes: torch.Tensor = field(default_factory=lambda: torch.zeros((0, 4), dtype=torch.long))

    def __len__(self) -> int:
        return len(self.rles)

    def keep(self, index: torch.Tensor) -> None:
        """Keep the rows selected by a bool mask or by indices, in that order."""
        if index.dtype == torch.bool:
            index = index.nonzero().flatten()
        positions = index.tolist()
        self.rles = [self.rles[i] for i in positions]
        self.boxes, self.iou_preds = self.boxes[index], self.iou_preds[index]
        self.points, self.stability_score = self.points[index], self.stability_score[index]
        self.crop_boxes = self.crop_boxes[index]

    def extend(self, other: _Candidates) -> None:
        self.rles = self.rles + other.rles
        self.boxes = torch.cat([self.boxes, other.boxes])
        self.iou_preds = torch.cat([self.iou_preds, other.iou_preds])
        self.points = torch.cat([self.points, other.points])
        self.stability_score = torch.cat([self.stability_score, other.stability_score])
        self.crop_boxes = torch.cat([self.crop_boxes, other.crop_boxes])


class SamAutomaticMaskGenerator:
    """Generates masks for a whole image from a grid of single-point prompts.

    Args:
        model: The SAM / MobileSAM model.
        points_per_side: Points along one side of the grid (points_per_side**2
            prompts); None when `point_grids` is given.
        points_per_batch: Prompts decoded together.
        pred_iou_thresh: Keep masks whose predicted IoU is above this.
        stability_score_thresh: Keep masks at least this stable when the logit
            cutoff moves by `stability_score_offset`.
        stability_score_offset: Shift of the cutoff for the stability score.
        box_nms_thresh: Box IoU above which duplicate masks within a crop are dropped.
        crop_n_layers: Extra layers of crops; layer i has (2**i)**2 crops.
        crop_nms_thresh: Box IoU above which duplicates across crops are dropped.
        crop_overlap_ratio: Overlap of neighbouring crops, as a fraction of the
            image's short side in the first layer.
        crop_n_points_downscale_factor: Layer i samples points_per_side / factor**i points per side.
        point_grids: Explicit (N, 2) grids in [0, 1] per crop layer.
        min_mask_region_area: If > 0, fill holes and remove islands smaller than this many pixels.
        output_mode: "binary_mask", "uncompressed_rle" or "coco_rle".
        backend: What embeds the crops and decodes the prompt batches: a `mobilesam.backends`
            backend or its name; default "auto", the fastest engine here whose masks reproduce
            fp32's ("torch" gives the reference's bits).
        embeddings: An `EmbeddingStore`, or its folder, read before the encoder runs on the
            image or a crop (each crop's pixels are their own entry); new ones are stored.
    """

    def __init__(
        self,
        model: Sam,
        points_per_side: int | None = GENERATOR_DEFAULTS.points_per_side,
        points_per_batch: int = GENERATOR_DEFAULTS.points_per_batch,
        pred_iou_thresh: float = GENERATOR_DEFAULTS.pred_iou_thresh,
        stability_score_thresh: float = GENERATOR_DEFAULTS.stability_score_thresh,
        stability_score_offset: float = GENERATOR_DEFAULTS.stability_score_offset,
        box_nms_thresh: float = GENERATOR_DEFAULTS.box_nms_thresh,
        crop_n_layers: int = GENERATOR_DEFAULTS.crop_n_layers,
        crop_nms_thresh: float = GENERATOR_DEFAULTS.crop_nms_thresh,
        crop_overlap_ratio: float = GENERATOR_DEFAULTS.crop_overlap_ratio,
        crop_n_points_downscale_factor: int = GENERATOR_DEFAULTS.crop_n_points_downscale_factor,
        point_grids: list[np.ndarray] | None = None,
        min_mask_region_area: int = GENERATOR_DEFAULTS.min_mask_region_area,
        output_mode: OutputMode = "binary_mask",
        *,
        backend: Backend | str = "auto",
        embeddings: EmbeddingStore | str | os.PathLike[str] | None = None,
    ) -> None:
        if (points_per_side is None) == (point_grids is None):
            raise ValueError("give exactly one of points_per_side and point_grids")
        if output_mode not in _OUTPUT_MODES:
            raise ValueError(f"output_mode must be one of {_OUTPUT_MODES}, got {output_mode!r}")
        if points_per_batch < 1:
            raise ValueError(f"points_per_batch must be at least 1, got {points_per_batch}")
        if crop_n_layers < 0:
            raise ValueError(f"crop_n_layers must be >= 0, got {crop_n_layers}")
        if crop_n_points_downscale_factor < 1:
            raise ValueError(f"crop_n_points_downscale_factor must be at least 1, got {crop_n_points_downscale_factor}")
        if min_mask_region_area < 0:
            raise ValueError(f"min_mask_region_area must be >= 0, got {min_mask_region_area}")
        for name, value in (("box_nms_thresh", box_nms_thresh), ("crop_nms_thresh", crop_nms_thresh)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} is a box IoU and must lie in [0, 1], got {value}")
        if not 0.0 <= crop_overlap_ratio < 1.0:
            raise ValueError(f"crop_overlap_ratio must lie in [0, 1), got {crop_overlap_ratio}")
        for name, value in (
            ("pred_iou_thresh", pred_iou_thresh),
            ("stability_score_thresh", stability_score_thresh),
            ("stability_score_offset", stability_score_offset),
        ):
            if not np.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value}")
        if points_per_side is not None:
            if points_per_side < 1:
                raise ValueError(f"points_per_side must be at least 1, got {points_per_side}")
            for layer in range(1, crop_n_layers + 1):
                if points_per_side // crop_n_points_downscale_factor**layer < 1:
                    raise ValueError(
                        f"no points in crop layer {layer}: lower crop_n_points_downscale_factor or raise points_per_side"
                    )
            self.point_grids = build_all_layer_point_grids(points_per_side, crop_n_layers, crop_n_points_downscale_factor)
        else:
            self.point_grids = [np.asarray(grid, dtype=np.float64) for grid in point_grids]
            if len(self.point_grids) < crop_n_layers + 1:
                raise ValueError(f"point_grids needs one grid per crop layer ({crop_n_layers + 1}), got {len(self.point_grids)}")
            for grid in self.point_grids:
                if grid.ndim != 2 or grid.shape[1] != 2 or len(grid) == 0 or not np.all((grid >= 0) & (grid <= 1)):
                    raise ValueError("point_grids must hold non-empty (N, 2) arrays of x, y in [0, 1]")
        self.predictor = SamPredictor(model, backend, embeddings)
        self.points_per_batch = points_per_batch
        self.pred_iou_thresh = pred_iou_thresh
        self.stability_score_thresh = stability_score_thresh
        self.stability_score_offset = stability_score_offset
        self.box_nms_thresh = box_nms_thresh
        self.crop_n_layers = crop_n_layers
        self.crop_nms_thresh = crop_nms_thresh
        self.crop_overlap_ratio = crop_overlap_ratio
        self.crop_n_points_downscale_factor = crop_n_points_downscale_factor
        self.min_mask_region_area = min_mask_region_area
        self.output_mode = output_mode

    @torch.no_grad()
    def generate(self, image: np.ndarray, embedding: ImageEmbedding[torch.Tensor] | None = None) -> list[dict[str, Any]]:
        """Segment everything in an image.

        Args:
            image: (H, W, 3) uint8 RGB (other image arrays are converted as in `SamPredictor.set_image`).
            embedding: The embedding of this very image by this model
                (`SamPredictor.embed`), for the whole-image crop; computed when None.
                Smaller crops are always embedded here.

        Raises:
            ValueError: `embedding` is of an image of another size.

        Returns:
            One record per mask, best first within each crop: 'segmentation'
            ((H, W) bool array or RLE dict, per `output_mode`), 'area' (pixels),
            'bbox' (XYWH), 'predicted_iou', 'point_coords' ([[x, y]] prompt),
            'stability_score', 'crop_box' (XYWH).
        """
        image = to_rgb_uint8(image)
        if embedding is not None:
            expected = get_preprocess_shape(*image.shape[:2], self.predictor.model.img_size)
            if embedding.original_size != image.shape[:2] or embedding.input_size != expected:
                raise ValueError(
                    f"the embedding is of a {embedding.original_size[1]}x{embedding.original_size[0]} image resized to "
                    f"{embedding.input_size[1]}x{embedding.input_size[0]}, but the image is {image.shape[1]}x{image.shape[0]} "
                    f"and this model resizes it to {expected[1]}x{expected[0]}"
                )
        candidates = self._generate_candidates(image, embedding)
        if self.min_mask_region_area > 0:
            candidates = self._remove_small_regions(candidates)
        encoded = encode_rles(candidates.rles, candidates.boxes, candidates.iou_preds)
        if self.output_mode == "coco_rle":
            segmentations: list[Any] = [mask.rle for mask in encoded]
        elif self.output_mode == "binary_mask":
            segmentations = [rle_to_mask(rle) for rle in candidates.rles]
        else:
            segmentations = [{"size": rle["size"], "counts": rle["counts"].tolist()} for rle in candidates.rles]
        crop_boxes = candidates.crop_boxes.numpy()
        return [
            {
                "segmentation": segmentations[i],
                "area": mask.area,
                "bbox": mask.bbox,
                "predicted_iou": mask.score,
                "point_coords": [candidates.points[i].tolist()],
                "stability_score": candidates.stability_score[i].item(),
                "crop_box": box_xyxy_to_xywh(crop_boxes[i]).tolist(),
            }
            for i, mask in enumerate(encoded)
        ]

    def _generate_candidates(self, image: np.ndarray, embedding: ImageEmbedding[torch.Tensor] | None) -> _Candidates:
        orig_size = image.shape[:2]
        crop_boxes, layer_idxs = generate_crop_boxes(orig_size, self.crop_n_layers, self.crop_overlap_ratio)
        candidates = _Candidates()
        for crop_box, layer_idx in zip(crop_boxes, layer_idxs):
            # Layer 0 is the whole image: the caller's embedding serves it.
            crop_embedding = embedding if layer_idx == 0 else None
            candidates.extend(self._process_crop(image, crop_box, layer_idx, orig_size, crop_embedding))
        if len(crop_boxes) > 1:
            # Between crops, prefer the masks of smaller crops.
            crop_boxes = candidates.crop_boxes
            scores = 1 / ((crop_boxes[:, 2] - crop_boxes[:, 0]) * (crop_boxes[:, 3] - crop_boxes[:, 1]))
            keep = batched_nms(candidates.boxes.float(), scores, torch.zeros(len(candidates)), iou_threshold=self.crop_nms_thresh)
            candidates.keep(keep)
        return candidates

    def _process_crop(
        self,
        image: np.ndarray,
        crop_box: list[int],
        layer_idx: int,
        orig_size: tuple[int, int],
        embedding: ImageEmbedding[torch.Tensor] | None,
    ) -> _Candidates:
        x0, y0, x1, y1 = crop_box
        # Each crop has its own embedding, so calls on other threads (the service) never share state.
        crop_embedding = embedding if embedding is not None else self.predictor.embed(image[y0:y1, x0:x1, :])
        crop_size = crop_embedding.original_size
        points_for_crop = self.point_grids[layer_idx] * np.array(crop_size)[None, ::-1]
        batches = [
            points_for_crop[start : start + self.points_per_batch]
            for start in range(0, len(points_for_crop), self.points_per_batch)
        ]

        def process(points: np.ndarray) -> _Candidates:
            with torch.no_grad():  # grad mode is per thread
                return self._process_batch(points, crop_embedding, crop_box, orig_size)

        candidates = _Candidates()
        parallel = self.predictor.backend.parallel_batches and self.predictor.device.type == "cpu"
        with _batch_workers(parallel, len(batches)) as map_batches:
            for batch_candidates in map_batches(process, batches):
                candidates.extend(batch_candidates)

        keep = batched_nms(
            candidates.boxes.float(), candidates.iou_preds, torch.zeros(len(candidates)), iou_threshold=self.box_nms_thresh
        )
        candidates.keep(keep)
        candidates.boxes = uncrop_boxes_xyxy(candidates.boxes, crop_box)
        candidates.points = uncrop_points(candidates.points, crop_box)
        candidates.crop_boxes = torch.tensor([crop_box] * len(candidates), dtype=torch.long).reshape(-1, 4)
        return candidates

    def _process_batch(
        self,
        points: np.ndarray,
        crop_embedding: ImageEmbedding[torch.Tensor],
        crop_box: list[int],
        orig_size: tuple[int, int],
    ) -> _Candidates:
        predictor, model = self.predictor, self.predictor.model
        # float64 like the reference, so the prompt encoder normalises the same numbers.
        in_points = torch.as_tensor(
            predictor.transform.apply_coords(points, crop_embedding.original_size), device=predictor.device
        )
        decoded = predictor.backend.decode_candidates(crop_embedding.features, in_points, self._passes_iou)
        keep = decoded.kept
        if not keep.any():
            return _Candidates()
        low_res = decoded.low_res_logits  # (K, 256, 256), one per kept candidate, prompt-major like the reference
        iou_preds = decoded.iou_predictions[keep]
        candidate_points = torch.as_tensor(np.repeat(points, keep.shape[1], axis=0))[keep.flatten().cpu()]

        postprocess = model.postprocess_masks if predictor.backend.spec.reference_numerics else partial(fast_postprocess, model)
        masks, scores, passed = [], [], []
        for start in range(0, len(low_res), _UPSCALE_CHUNK):
            logits = postprocess(
                low_res[start : start + _UPSCALE_CHUNK, None], crop_embedding.input_size, crop_embedding.original_size
            )[:, 0]  # (chunk, H, W) at the crop's size
            score = calculate_stability_score(logits, model.mask_threshold, self.stability_score_offset)
            stable = score >= self.stability_score_thresh
            if self.stability_score_thresh <= 0.0:
                stable = torch.ones_like(stable)
            masks.append(logits[stable] > model.mask_threshold)
            scores.append(score)
            passed.append(stable)
        masks_t = torch.cat(masks)
        boxes = batched_mask_to_box(masks_t)
        inside = ~is_box_near_crop_edge(boxes, crop_box, [0, 0, orig_size[1], orig_size[0]])
        final = torch.cat(passed).nonzero().flatten()[inside]
        return _Candidates(
            rles=_encode(uncrop_masks(masks_t[inside], crop_box, *orig_size)),
            boxes=boxes[inside],
            iou_preds=iou_preds[final],
            points=candidate_points[final.cpu()],
            stability_score=torch.cat(scores)[final],
            crop_boxes=torch.zeros((len(final), 4), dtype=torch.long),
        )

    def _passes_iou(self, iou_preds: torch.Tensor) -> torch.Tensor:
        """(B, 3) bool: the candidates whose predicted IoU passes the threshold (all when it is 0 or less)."""
        if self.pred_iou_thresh > 0.0:
            return iou_preds > self.pred_iou_thresh
        return torch.ones_like(iou_preds, dtype=torch.bool)

    def _remove_small_regions(self, candidates: _Candidates) -> _Candidates:
        """Fill small holes and drop small islands, then drop new duplicates (NMS prefers untouched masks)."""
        if len(candidates) == 0:
            return candidates
        masks, unchanged = [], []
        for rle in candidates.rles:
            mask, holes_changed = remove_small_regions(rle_to_mask(rle), self.min_mask_region_area, mode="holes")
            mask, islands_changed = remove_small_regions(mask, self.min_mask_region_area, mode="islands")
            masks.append(torch.as_tensor(mask))
            unchanged.append(float(not (holes_changed or islands_changed)))
        masks_t = torch.stack(masks)
        boxes = batched_mask_to_box(masks_t)
        keep = batched_nms(
            boxes.float(),
            torch.as_tensor(unchanged),
            torch.zeros(len(boxes)),
            iou_threshold=max(self.box_nms_thresh, self.crop_nms_thresh),
        )
        for i in keep.tolist():
            if unchanged[i] == 0.0:
                candidates.rles[i] = _encode(masks_t[i][None])[0]
                candidates.boxes[i] = boxes[i]
        candidates.keep(keep)
        return candidates


def _encode(masks: torch.Tensor) -> list[dict[str, Any]]:
    """(B, H, W) bool masks -> `mask_to_rle`'s RLEs with the counts left as arrays."""
    return [{"size": list(masks.shape[1:]), "counts": counts} for counts in rle_counts(masks)]


@contextlib.contextmanager
def _batch_workers(parallel: bool, num_batches: int) -> Iterator[Callable[..., Iterator[Any]]]:
    """A `map` that processes prompt batches side by side (when `parallel`), each running torch on one core.

    The decoder's work per prompt is small matrix products and memory-bound
    element-wise passes, which use two cores poorly inside one op; one batch
    per core uses them fully. Results stay within fp32 rounding of the
    reference's (AVX-512 kernels may block a sum differently at another
    thread count; `tests/tolerance.py`).
    """
    workers = min(torch.get_num_threads(), num_batches) if parallel else 1
    if workers <= 1:
        yield map
        return
    with _one_thread_per_op(), ThreadPoolExecutor(workers, thread_name_prefix="mobilesam-amg") as pool:
        yield pool.map


_thread_lock = threading.Lock()
_single_threaded_runs = 0
_threads_before = 1


@contextlib.contextmanager
def _one_thread_per_op() -> Iterator[None]:
    """torch's thread count is global: 1 while any generator's workers run, then what it was.

    Counted, so that generators running at the same time (a service with
    several workers) restore the count once, after the last one ends.
    """
    global _single_threaded_runs, _threads_before
    with _thread_lock:
        if _single_threaded_runs == 0:
            _threads_before = torch.get_num_threads()
            torch.set_num_threads(1)
        _single_threaded_runs += 1
    try:
        yield
    finally:
        with _thread_lock:
            _single_threaded_runs -= 1
            if _single_threaded_runs == 0:
                torch.set_num_threads(_threads_before)
