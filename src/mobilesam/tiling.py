"""Large images by tiles: embed overlapping windows at full resolution, decode prompts and segment everything on them.

An image larger than the model's input is otherwise squeezed into it (an
8000x6000 scan into 1024x768), and small objects vanish. Here it is cut
into square windows of `tile_shape` pixels that overlap their neighbours by
2 * `halo` pixels (micro-sam's names); each window is embedded on its own
through `SamPredictor.embed`, so an embedding store keeps every window under
its own pixels' digest. Each pixel is *owned* by exactly one window: the
window less `halo` on each side that faces another window (less half the
overlap where the last window of a row or column is moved back to end at
the image's edge, so that every window is `tile_shape` wide where the image
is). Prompts are decoded on one window each; segment everything keeps each
window's masks centred in what it owns and clear of its inner edges.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .automatic import SamAutomaticMaskGenerator
from .embedding import ImageEmbedding
from .io.images import pixels_digest, to_rgb_uint8
from .masks import batched_nms, coco_decode_rle, coco_encode_rle, is_box_near_crop_edge, rle_to_mask
from .predictor import SamPredictor
from .prompts import Prompt, make_prompt
from .results import Results
from .segment import prompt_rows, segment_prompts

# How far (pixels) a mask's box may come to a window's inner edge and still count as whole: SAM's crops' margin.
EDGE_MARGIN = 20.0

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Window:
    """One window of a tiling, in the image's pixels.

    Attributes:
        box: XYXY of the window's pixels, x1 and y1 exclusive (`image[y0:y1, x0:x1]`).
        owned: XYXY (exclusive ends) of the pixels this window owns: every pixel of the image is owned by one window.
    """

    box: Box
    owned: Box

    @property
    def offset(self) -> tuple[int, int]:
        """(x0, y0): what is added to a window coordinate to place it in the image."""
        return self.box[0], self.box[1]

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the window."""
        return self.box[3] - self.box[1], self.box[2] - self.box[0]

    def pixels(self, image: np.ndarray) -> np.ndarray:
        """The window's part of an (H, W, ...) image (a view)."""
        x0, y0, x1, y1 = self.box
        return image[y0:y1, x0:x1]


@dataclass(frozen=True, eq=False)
class TiledEmbedding:
    """An image's windows and their embeddings (`embed_tiles`).

    Attributes:
        image_size: (H, W) of the whole image.
        tile_shape: Side of a window in pixels.
        halo: Pixels each window reaches past what it owns, towards each neighbour.
        windows: The windows, row by row (`tile_windows`).
        embeddings: Window index -> the embedding of that window's pixels; every window, or
            only those some prompts need (`embed_tiles(..., prompts=...)`).
    """

    image_size: tuple[int, int]
    tile_shape: int
    halo: int
    windows: tuple[Window, ...]
    embeddings: Mapping[int, ImageEmbedding[torch.Tensor]]

    def embedding(self, index: int) -> ImageEmbedding[torch.Tensor]:
        """The embedding of window `index`.

        Raises:
            ValueError: That window was not embedded.
        """
        if index not in self.embeddings:
            box = self.windows[index].box
            raise ValueError(
                f"tile window {index} ({box[0]},{box[1]})-({box[2]},{box[3]}) was not embedded: embed_tiles(..., prompts=...) "
                "embeds only the windows those prompts need; pass these prompts too, or none to embed every window"
            )
        return self.embeddings[index]


def check_tiling(tile_shape: int | None, halo: int) -> None:
    """Check a tiling's numbers: a window of `tile_shape` pixels whose neighbours overlap it by 2 * `halo`.

    `tile_shape` None (no tiling) passes with `halo` 0.

    Raises:
        ValueError: `tile_shape` below 1, `halo` below 0, 2 * `halo` not below `tile_shape` (no stride left),
            or a `halo` without a `tile_shape`.
    """
    if tile_shape is None:
        if halo:
            raise ValueError(f"halo {halo} needs a tile_shape: the halo is how far tiles overlap")
        return
    for name, value in (("tile_shape", tile_shape), ("halo", halo)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"{name} must be a whole number of pixels, got {value!r}")
    if tile_shape < 1:
        raise ValueError(f"tile_shape must be at least 1 pixel, got {tile_shape}")
    if halo < 0:
        raise ValueError(f"halo must be at least 0 pixels, got {halo}")
    if 2 * halo >= tile_shape:
        raise ValueError(
            f"halo {halo} is too large for tile_shape {tile_shape}: neighbouring windows overlap by 2 * halo, "
            f"which must stay below tile_shape (halo at most {(tile_shape - 1) // 2})"
        )


def tile_windows(height: int, width: int, tile_shape: int, halo: int) -> list[Window]:
    """The windows that tile a `height` x `width` image, row by row.

    Windows start every `tile_shape - 2 * halo` pixels; the last of a row or
    column is moved back to end at the image's edge, so each window is
    `tile_shape` pixels wide and high where the image is (an image side no
    longer than `tile_shape` is one window). Neighbours own up to the middle
    of their overlap: `halo` pixels in from each window's inner edge.

    Raises:
        ValueError: A bad tiling (`check_tiling`) or an empty image.
    """
    check_tiling(tile_shape, halo)
    if height < 1 or width < 1:
        raise ValueError(f"cannot tile an empty image: {width}x{height}")
    rows, columns = _spans(height, tile_shape, halo), _spans(width, tile_shape, halo)
    return [Window(box=(x0, y0, x1, y1), owned=(ox0, oy0, ox1, oy1)) for y0, y1, oy0, oy1 in rows for x0, x1, ox0, ox1 in columns]


def _spans(length: int, tile: int, halo: int) -> list[tuple[int, int, int, int]]:
    """Along one side: (start, end, owned start, owned end) per window."""
    if length <= tile:
        return [(0, length, 0, length)]
    stride = tile - 2 * halo
    starts = [min(i * stride, length - tile) for i in range(math.ceil((length - tile) / stride) + 1)]
    # Owned up to the middle of each overlap: `halo` from the edge for a full stride, more for the last window.
    bounds = [0, *((left + tile + right) // 2 for left, right in zip(starts, starts[1:])), length]
    return [(start, start + tile, bounds[i], bounds[i + 1]) for i, start in enumerate(starts)]


def embed_tiles(
    predictor: SamPredictor,
    image: np.ndarray,
    tile_shape: int | None = None,
    halo: int = 0,
    *,
    prompts: Sequence[Prompt] | None = None,
    reuse: TiledEmbedding | None = None,
) -> TiledEmbedding:
    """Embed an image window by window, each through `predictor.embed` (so an embedding store keeps each window).

    Memory: one embedding per window embedded (4 MiB each for SAM's 256x64x64
    fp32 features: 88 windows of 1024 with halo 128 over 8000x6000 hold 352 MiB).

    Args:
        predictor: Whose model embeds, reading and filling its embedding store if it has one.
        image: (H, W, 3) uint8 RGB (other image arrays are converted as `SamPredictor.embed` does).
        tile_shape: Side of a window in pixels; default the model's input size, so a window is embedded
            at full resolution.
        halo: Pixels each window reaches past what it owns, towards each neighbour (overlap 2 * halo).
        prompts: Embed only the windows these prompts (full image frame) are decoded on (`segment_tiled`);
            None embeds every window.
        reuse: An earlier `TiledEmbedding` of this very image with the same tiling: its windows are not
            embedded again (the caller vouches that the pixels are the same).

    Raises:
        ValueError: A bad tiling (`check_tiling`), `reuse` of another tiling, or a prompt `segment_tiled` refuses.
    """
    rgb = to_rgb_uint8(image)
    tile = predictor.model.image_encoder.img_size if tile_shape is None else tile_shape
    height, width = rgb.shape[:2]
    windows = tuple(tile_windows(height, width, tile, halo))
    known: dict[int, ImageEmbedding[torch.Tensor]] = {}
    if reuse is not None:
        if (reuse.image_size, reuse.tile_shape, reuse.halo) != ((height, width), tile, halo):
            raise ValueError(
                f"reuse holds a {reuse.image_size[1]}x{reuse.image_size[0]} image in tiles of {reuse.tile_shape} "
                f"with halo {reuse.halo}, not a {width}x{height} image in tiles of {tile} with halo {halo}"
            )
        known = dict(reuse.embeddings)
    if prompts is None:
        needed: set[int] = set(range(len(windows)))
    else:
        needed = {part.window for prompt in prompts for part in _plan(prompt, windows, (height, width), halo)}
    for index in sorted(needed - set(known)):
        known[index] = predictor.embed(windows[index].pixels(rgb))
    return TiledEmbedding((height, width), tile, halo, windows, dict(sorted(known.items())))


def embed_into_store(predictor: SamPredictor, image: np.ndarray, tile_shape: int | None = None, halo: int = 0) -> bool:
    """Store an image's embedding, or with `tile_shape` each of its windows', in the predictor's store, unless stored.

    Args:
        predictor: Has the store (`SamPredictor(..., embeddings=store)`) and embeds what it lacks.
        image: (H, W, 3) uint8 RGB.
        tile_shape: Store the windows of this tiling instead of the whole image (`embed_tiles`).
        halo: With `tile_shape`, the tiling's halo.

    Returns:
        Whether the encoder ran: False when the store held all of it already.

    Raises:
        ValueError: The predictor has no store, or a bad tiling.
    """
    store = predictor.embeddings
    if store is None:
        raise ValueError("embed_into_store needs a predictor with an embedding store: SamPredictor(..., embeddings=store)")
    rgb = to_rgb_uint8(image)
    if tile_shape is None:
        parts = [rgb]
    else:
        check_tiling(tile_shape, halo)
        parts = [window.pixels(rgb) for window in tile_windows(*rgb.shape[:2], tile_shape, halo)]
    if all(store.holds(pixels_digest(part)) for part in parts):
        return False
    for part in parts:
        predictor.embed(part)
    return True


@dataclass(frozen=True)
class _Part:
    """One window's share of one object's prompt: the prompt in the window's frame, and whether it is a clipped box."""

    window: int
    prompt: Prompt
    clipped: bool


def _plan(prompt: Prompt, windows: Sequence[Window], image_size: tuple[int, int], halo: int) -> list[_Part]:
    """Where one object's prompt is decoded: one window, or for a box wider than any window, each window it crosses."""
    if prompt.mask_input is not None:
        raise ValueError("mask_input prompts are not taken with tiles: low-res logits belong to one embedding, not a tiling")
    if prompt.point_coords is None and prompt.box is None:
        raise ValueError("a prompt without points or a box has no place among the tiles: give points or a box")
    height, width = image_size
    extent = _extent(prompt, image_size)
    fitting = [i for i, window in enumerate(windows) if _contains(window.box, extent)]
    if fitting:
        owner = _owner(windows, ((extent[0] + extent[2]) / 2, (extent[1] + extent[3]) / 2), image_size)
        margins = {i: _margin(windows[i].box, extent, image_size) for i in fitting}
        # The owner of the prompt's centre, where the tiling promises `halo` of context; else the most context.
        best = owner if owner in margins and margins[owner] >= halo else max(fitting, key=lambda i: (margins[i], -i))
        return [_Part(best, _shifted(prompt, windows[best].box, None, image_size), clipped=False)]
    if prompt.box is None:
        x0, y0, x1, y1 = (round(float(v)) for v in extent)
        raise ValueError(
            f"the points of one object span {x1 - x0}x{y1 - y0} pixels ({x0},{y0})-({x1},{y1}), wider than a tile window "
            f"({windows[0].size[1]}x{windows[0].size[0]}): give each object's points within one window, add a box "
            "around the object, or use a larger tile_shape"
        )
    box = np.clip(prompt.box, 0, [width, height, width, height])
    crossed = [
        i
        for i, window in enumerate(windows)
        if window.owned[0] <= box[2] and box[0] < window.owned[2] and window.owned[1] <= box[3] and box[1] < window.owned[3]
    ]
    if prompt.point_coords is not None:
        for (x, y), (cx, cy) in zip(prompt.point_coords, np.clip(prompt.point_coords, 0, [width, height])):
            if not any(_contains(windows[i].box, np.array([cx, cy, cx, cy])) for i in crossed):
                raise ValueError(
                    f"point ({x:g}, {y:g}) lies in none of the tile windows its object's box "
                    f"{[round(float(v), 1) for v in prompt.box]} crosses: give the box's points inside the box's windows"
                )
    return [_Part(i, _shifted(prompt, windows[i].box, box, image_size), clipped=True) for i in crossed]


def _extent(prompt: Prompt, image_size: tuple[int, int]) -> np.ndarray:
    """XYXY around a prompt's points and box, clipped to the image (points may lie a little outside it)."""
    corners = [
        part for part in (prompt.point_coords, None if prompt.box is None else prompt.box.reshape(2, 2)) if part is not None
    ]
    xy = np.concatenate(corners)
    height, width = image_size
    extent = np.concatenate([xy.min(axis=0), xy.max(axis=0)])
    return np.clip(extent, 0, [width, height, width, height])


def _contains(box: Box, extent: np.ndarray) -> bool:
    return bool(box[0] <= extent[0] and box[1] <= extent[1] and extent[2] <= box[2] and extent[3] <= box[3])


def _margin(box: Box, extent: np.ndarray, image_size: tuple[int, int]) -> float:
    """The context a window gives around `extent`: its least distance to a window edge that faces another window."""
    height, width = image_size
    sides = (
        (box[0] > 0, extent[0] - box[0]),
        (box[1] > 0, extent[1] - box[1]),
        (box[2] < width, box[2] - extent[2]),
        (box[3] < height, box[3] - extent[3]),
    )
    return min((float(distance) for inner, distance in sides if inner), default=math.inf)


def _owner(windows: Sequence[Window], xy: tuple[float, float], image_size: tuple[int, int]) -> int:
    """The window that owns the pixel under `xy`."""
    x = min(max(int(xy[0]), 0), image_size[1] - 1)
    y = min(max(int(xy[1]), 0), image_size[0] - 1)
    return next(i for i, w in enumerate(windows) if w.owned[0] <= x < w.owned[2] and w.owned[1] <= y < w.owned[3])


def _shifted(prompt: Prompt, box: Box, clip_box: np.ndarray | None, image_size: tuple[int, int]) -> Prompt:
    """`prompt` in the frame of the window `box`; with `clip_box`, its box clipped to the window and only the points in it."""
    x0, y0, x1, y1 = box
    offset = np.array([x0, y0], dtype=np.float64)
    coords, labels = prompt.point_coords, prompt.point_labels
    if clip_box is not None and coords is not None:
        # Where a point lies, as for choosing windows: a point a little outside the image counts at its edge.
        x, y = np.clip(coords, 0, [image_size[1], image_size[0]]).T
        inside = (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)
        coords, labels = (coords[inside], labels[inside]) if inside.any() else (None, None)
    new_box = prompt.box
    if clip_box is not None:
        new_box = np.clip(clip_box, [x0, y0, x0, y0], [x1, y1, x1, y1])
    return make_prompt(
        None if coords is None else coords - offset,
        labels,
        None if new_box is None else new_box - np.tile(offset, 2),
    )


def segment_tiled(
    predictor: SamPredictor,
    tiled: TiledEmbedding,
    prompts: Sequence[Prompt],
    image: np.ndarray,
    multimask_output: bool = False,
    path: str | None = None,
) -> Results:
    """Each object's masks on a tiled image, in the objects' order, as `segment_prompts` gives them on one embedding.

    An object is decoded on the window that holds all of its points and its
    box: the window that owns the prompt's centre when that leaves `halo`
    pixels of context, else the one with the most context. The prompt is
    moved into the window's frame, decoded by `segment_prompts`, and the
    masks are put back in the image's frame with the scores as decoded. A box
    wider than any window is decoded, clipped, on every window whose owned
    part it crosses (with its points that lie in that window); each window's
    mask counts only where that window owns the pixels, the parts are joined
    and the score is their area-weighted mean.

    Args:
        predictor: Whose backend decodes; the one whose model embedded `tiled`.
        tiled: The image's windows and embeddings (`embed_tiles`).
        prompts: One checked prompt per object, in the whole image's frame (no `mask_input`).
        image: (H, W, 3) uint8 RGB pixels of the tiled image, for `Results.orig_img`.
        multimask_output: Three candidate masks per object instead of the best one.
        path: The image's path, for `Results`.

    Returns:
        `Results` with (N * C, H, W) masks in the image's frame and the prompts as given (no `low_res_logits`:
        those belong to a window).

    Raises:
        ValueError: No prompts, an image of another size, one object's points spread wider than a window,
            a `mask_input` prompt, or a window the prompts need that `tiled` lacks.
    """
    if not prompts:
        raise ValueError("no objects to segment: give points or a box")
    if tuple(image.shape[:2]) != tiled.image_size:
        raise ValueError(
            f"the image is {image.shape[1]}x{image.shape[0]} but the tiles are of a "
            f"{tiled.image_size[1]}x{tiled.image_size[0]} image"
        )
    plans = [_plan(prompt, tiled.windows, tiled.image_size, tiled.halo) for prompt in prompts]
    per_window: dict[int, list[tuple[int, _Part]]] = {}
    for number, parts in enumerate(plans):
        for part in parts:
            per_window.setdefault(part.window, []).append((number, part))
    per_object = 3 if multimask_output else 1
    height, width = tiled.image_size
    masks = np.zeros((len(prompts) * per_object, height, width), dtype=bool)
    scores = np.zeros((len(prompts), per_object), dtype=np.float32)
    clipped_scores: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}  # object -> per window (scores, owned areas)
    for index, members in per_window.items():
        window = tiled.windows[index]
        decoded = segment_prompts(
            predictor,
            tiled.embedding(index),
            [part.prompt for _, part in members],
            window.pixels(image),
            multimask_output=multimask_output,
        )
        window_masks = np.asarray(decoded.masks).reshape(len(members), per_object, *window.size)
        window_scores = decoded.scores.reshape(len(members), per_object)
        for (number, part), object_masks, object_scores in zip(members, window_masks, window_scores):
            rows = slice(number * per_object, (number + 1) * per_object)
            if part.clipped:
                ox0, oy0, ox1, oy1 = window.owned
                x0, y0 = window.offset
                owned = object_masks[:, oy0 - y0 : oy1 - y0, ox0 - x0 : ox1 - x0]
                masks[rows, oy0:oy1, ox0:ox1] |= owned
                clipped_scores.setdefault(number, []).append((object_scores, owned.sum(axis=(1, 2))))
            else:
                x0, y0, x1, y1 = window.box
                masks[rows, y0:y1, x0:x1] = object_masks
                scores[number] = object_scores
    for number, parts in clipped_scores.items():
        part_scores, part_areas = (np.stack(values).astype(np.float64) for values in zip(*parts))
        total = part_areas.sum(axis=0)
        weighted = (part_scores * part_areas).sum(axis=0) / np.maximum(total, 1)
        # Where every window's part came out empty there is no area to weigh by: the plain mean.
        scores[number] = np.where(total > 0, weighted, part_scores.mean(axis=0))
    points, labels, bboxes = prompt_rows(prompts, per_object)
    return Results(
        orig_img=image,
        masks=masks,
        scores=scores.reshape(-1),
        points=points,
        labels=labels,
        bboxes=bboxes,
        path=path,
    )


def generate_tiled(
    generator: SamAutomaticMaskGenerator, image: np.ndarray, tile_shape: int | None = None, halo: int = 0
) -> list[dict[str, Any]]:
    """Segment everything window by window, each window's masks placed in the whole image.

    Each window is segmented by `generator.generate` on its pixels (embedded
    through the generator's predictor, so an embedding store keeps each
    window). A window keeps a mask when its box's centre lies in what the
    window owns and the box stays `EDGE_MARGIN` pixels clear of every window
    edge that faces another window: an object cut by such an edge is seen
    whole by the window that owns it, if `halo` exceeds its half size plus
    `EDGE_MARGIN` (objects larger than that, across a seam, are lost). Masks
    kept by different windows then go through NMS by box IoU at
    `generator.crop_nms_thresh`, higher predicted IoU first, as SAM's crops do.
    An image of one window gives `generator.generate(image)`'s records.

    Memory: one window's records at a time, plus each kept mask cropped to its
    box; the records returned hold full-image masks only in the generator's
    "binary_mask" mode (H * W bytes each: 48 MB per mask of 8000x6000, so
    prefer an RLE `output_mode` for large images). One window's embedding at a time.

    Args:
        generator: Its options and `output_mode` apply within each window.
        image: (H, W, 3) uint8 RGB (other image arrays are converted as `SamPredictor.embed` does).
        tile_shape: Side of a window in pixels; default the model's input size.
        halo: Pixels each window reaches past what it owns, towards each neighbour (overlap 2 * halo).

    Returns:
        SAM's records in the whole image's frame: 'segmentation' (per `generator.output_mode`), 'area',
        'bbox' (XYWH), 'predicted_iou', 'point_coords', 'stability_score', 'crop_box' (XYWH of the window,
        or of a crop within it with `crop_n_layers`).

    Raises:
        ValueError: A bad tiling (`check_tiling`).
    """
    rgb = to_rgb_uint8(image)
    height, width = rgb.shape[:2]
    tile = generator.predictor.model.image_encoder.img_size if tile_shape is None else tile_shape
    windows = tile_windows(height, width, tile, halo)
    kept: list[tuple[dict[str, Any], tuple[int, int], list[int], np.ndarray]] = []  # record, offset, XYXY, cropped mask
    for window in windows:
        records = generator.generate(window.pixels(rgb))
        if not records:
            continue
        x0, y0 = window.offset
        boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (r["bbox"] for r in records)], dtype=torch.long)
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2 + torch.tensor([x0, y0])
        ox0, oy0, ox1, oy1 = window.owned
        owned = (centres[:, 0] >= ox0) & (centres[:, 0] < ox1) & (centres[:, 1] >= oy0) & (centres[:, 1] < oy1)
        cut = is_box_near_crop_edge(boxes, list(window.box), [0, 0, width, height], atol=EDGE_MARGIN)
        for record, box, keep in zip(records, boxes.tolist(), (owned & ~cut).tolist()):
            if keep:
                left, top, right, bottom = box
                crop = _window_mask(record["segmentation"], generator.output_mode)[top : bottom + 1, left : right + 1].copy()
                kept.append((record, (x0, y0), [left + x0, top + y0, right + x0, bottom + y0], crop))
        del records  # before the next window's: one window's masks at a time
    if len(windows) > 1 and kept:
        order = batched_nms(
            torch.tensor([box for _, _, box, _ in kept], dtype=torch.float),
            torch.tensor([record["predicted_iou"] for record, _, _, _ in kept], dtype=torch.float),
            torch.zeros(len(kept)),
            iou_threshold=generator.crop_nms_thresh,
        )
        kept = [kept[i] for i in order.tolist()]
    return [
        _frame_record(record, offset, box, crop, generator.output_mode, (height, width)) for record, offset, box, crop in kept
    ]


def _window_mask(segmentation: Any, output_mode: str) -> np.ndarray:
    """A record's mask as an (h, w) bool array of its window."""
    if output_mode == "binary_mask":
        return np.asarray(segmentation, dtype=bool)
    if output_mode == "coco_rle":
        return coco_decode_rle(segmentation)
    return rle_to_mask(segmentation)


def _frame_record(
    record: dict[str, Any],
    offset: tuple[int, int],
    box: list[int],
    crop: np.ndarray,
    output_mode: str,
    image_size: tuple[int, int],
) -> dict[str, Any]:
    """A window's record in the image's frame (`offset`: the window's), its mask made full size (or RLE) only now."""
    left, top, right, bottom = box
    dx, dy = offset
    height, width = image_size
    if output_mode == "binary_mask":
        segmentation: Any = np.zeros(image_size, dtype=bool)
        segmentation[top : bottom + 1, left : right + 1] = crop
    else:
        segmentation = _frame_rle(crop, left, top, height, width)
        if output_mode == "coco_rle":
            segmentation = coco_encode_rle(segmentation)
    cx, cy, cw, ch = record["crop_box"]
    return {
        "segmentation": segmentation,
        "area": record["area"],
        "bbox": [left, top, right - left, bottom - top],
        "predicted_iou": record["predicted_iou"],
        "point_coords": [[x + dx, y + dy] for x, y in record["point_coords"]],
        "stability_score": record["stability_score"],
        "crop_box": [cx + dx, cy + dy, cw, ch],
    }


def _frame_rle(crop: np.ndarray, left: int, top: int, height: int, width: int) -> dict[str, Any]:
    """The uncompressed RLE (`mask_to_rle`'s) of a `height` x `width` mask that is `crop` at (left, top), zeros elsewhere.

    Made from the crop's pixels alone: no full-size mask is built.
    """
    columns, rows = np.nonzero(crop.T)  # column-major order, as RLE counts run
    index = (columns.astype(np.int64) + left) * height + rows + top
    if index.size == 0:
        return {"size": [height, width], "counts": [height * width]}
    breaks = np.flatnonzero(np.diff(index) != 1)
    starts = np.concatenate([index[:1], index[breaks + 1]])
    ends = np.concatenate([index[breaks], index[-1:]]) + 1
    zeros = starts - np.concatenate([[0], ends[:-1]])
    counts = np.stack([zeros, ends - starts], axis=1).reshape(-1).tolist()
    if ends[-1] < height * width:
        counts.append(int(height * width - ends[-1]))
    return {"size": [height, width], "counts": counts}
