"""Small objects in a large image: whole-image segmentation against tiles, on a generated image whose masks are known.

    python benchmarks/tiles.py [--size 8000x6000] [--objects 300] [--tile 1024] [--halo 128]
                               [--model mobile_sam.pt] [--backend auto] [--threads 2] [--seed 0]

The image: a textured background with a few hundred flat-coloured discs,
squares and triangles of 8-40 pixels, none touching another. Two figures:

1. The resolution bound, independent of the weights. SAM's decoder draws a
   mask as a 256x256 grid of logits over the long side of what was embedded
   (the whole image, or one window), which `Sam.postprocess_masks` upscales
   bilinearly. For each object, the grid it would be best drawn on: +10 in
   each cell the object covers more than half of, -10 elsewhere, upscaled
   the same way and cut at 0. Its IoU with the true mask is what the
   pipeline can express at that resolution, whatever the weights: on an
   8000-pixel side a cell is 31 pixels, so a 10-pixel object has no cell.
2. The real pipeline with `--model` (default seeded random weights, whose
   masks mean nothing; pass mobile_sam.pt where you have it): one click at
   each object's centre, decoded on the whole image and by tiles
   (`mobilesam.tiling`, which embeds only the windows the clicks need), the
   mIoU and the time of each.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mobilesam import build_sam, load_sam
from mobilesam.bench import machine_summary
from mobilesam.predictor import SamPredictor
from mobilesam.prompts import make_prompt
from mobilesam.segment import segment_prompts
from mobilesam.tiling import Window, embed_tiles, segment_tiled, tile_windows
from mobilesam.transforms import get_preprocess_shape

# Seeded random weights live with the tests.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from reference import randomize

SIZES = (8, 40)  # object sides in pixels
BUCKETS = ((8, 15), (16, 25), (26, 40))
# Objects decoded at once: whole-image masks are upscaled in float32, 4 bytes a pixel each.
CHUNK = 4


@dataclass(frozen=True)
class Shape:
    """One object: its box in the image (x0, y0, x1, y1, ends exclusive) and its mask within the box."""

    kind: str
    box: tuple[int, int, int, int]
    mask: np.ndarray

    @property
    def side(self) -> int:
        return max(self.box[2] - self.box[0], self.box[3] - self.box[1])

    @property
    def centre(self) -> tuple[float, float]:
        ys, xs = np.nonzero(self.mask)
        return self.box[0] + xs.mean() + 0.5, self.box[1] + ys.mean() + 0.5


def make_scene(width: int, height: int, count: int, seed: int) -> tuple[np.ndarray, list[Shape]]:
    """A textured (H, W, 3) uint8 image and the objects painted on it, apart from each other by 4 pixels or more."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(70, 180, (max(2, height // 64), max(2, width // 64), 3)).astype(np.uint8)
    image = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BILINEAR), dtype=np.int16)
    image += rng.integers(-14, 15, (height, width, 1), dtype=np.int16)
    taken = np.zeros((height, width), bool)
    shapes: list[Shape] = []
    for _ in range(count * 50):
        if len(shapes) == count:
            break
        side = int(rng.integers(SIZES[0], SIZES[1] + 1))
        x0, y0 = int(rng.integers(4, width - side - 4)), int(rng.integers(4, height - side - 4))
        if taken[y0 - 4 : y0 + side + 4, x0 - 4 : x0 + side + 4].any():
            continue
        kind = ("disc", "square", "triangle")[len(shapes) % 3]
        mask = _shape_mask(kind, side)
        hue = rng.uniform(0, 1)
        colour = np.array([np.cos(2 * np.pi * (hue + k / 3)) for k in range(3)]) * 110 + 128
        image[y0 : y0 + side, x0 : x0 + side][mask] = colour.astype(np.int16)
        taken[y0 : y0 + side, x0 : x0 + side] = True
        shapes.append(Shape(kind, (x0, y0, x0 + side, y0 + side), mask))
    return np.clip(image, 0, 255).astype(np.uint8), shapes


def _shape_mask(kind: str, side: int) -> np.ndarray:
    yy, xx = np.mgrid[:side, :side] + 0.5
    if kind == "disc":
        return (xx - side / 2) ** 2 + (yy - side / 2) ** 2 <= (side / 2) ** 2
    if kind == "square":
        return np.ones((side, side), bool)
    return (yy >= side - 2 * xx) & (yy >= 2 * xx - side)  # apex up, base along the bottom


def _axis_operator(out_len: int, in_len: int) -> np.ndarray:
    """(out_len, in_len): torch's bilinear resize along one axis (align_corners=False), as a matrix."""
    src = np.maximum((np.arange(out_len) + 0.5) * (in_len / out_len) - 0.5, 0.0)
    low = np.minimum(np.floor(src).astype(np.int64), in_len - 1)
    high = np.minimum(low + 1, in_len - 1)
    weight = src - low
    matrix = np.zeros((out_len, in_len))
    np.add.at(matrix, (np.arange(out_len), low), 1 - weight)
    np.add.at(matrix, (np.arange(out_len), high), weight)
    return matrix


class Grid:
    """The low-res logit grid over one embedded frame (the image, or a window), and its way back to the frame's pixels.

    `Sam.postprocess_masks`: bilinear from the grid to the model's input, the padding cropped off, bilinear
    to the frame's size; per axis that is one matrix from grid cells to the frame's pixels.
    """

    def __init__(self, height: int, width: int, img_size: int) -> None:
        self.size = (height, width)
        self.cells = img_size // 4
        input_h, input_w = get_preprocess_shape(height, width, img_size)
        self.scale = img_size / max(height, width)  # input pixels per frame pixel
        upscale = _axis_operator(img_size, self.cells)
        self.rows = _axis_operator(height, input_h) @ upscale[:input_h]
        self.cols = _axis_operator(width, input_w) @ upscale[:input_w]
        self.cell_of_row = np.floor((np.arange(height) + 0.5) * self.scale / 4).astype(np.int64)
        self.cell_of_col = np.floor((np.arange(width) + 0.5) * self.scale / 4).astype(np.int64)
        self.row_counts = np.bincount(self.cell_of_row, minlength=self.cells)
        self.col_counts = np.bincount(self.cell_of_col, minlength=self.cells)

    def best_iou(self, shape: Shape, offset: tuple[int, int]) -> float:
        """IoU of the object with the mask of its ideal +-10 logit grid, the frame at `offset` in the image."""
        x0, y0, x1, y1 = shape.box
        fx0, fy0 = x0 - offset[0], y0 - offset[1]
        ys, xs = np.nonzero(shape.mask)
        cell_y, cell_x = self.cell_of_row[ys + fy0], self.cell_of_col[xs + fx0]
        covered = np.zeros((self.cells, self.cells))
        np.add.at(covered, (cell_y, cell_x), 1.0)
        on = covered > 0.5 * np.outer(self.row_counts, self.col_counts)
        # Bilinear weights sum to 1, so the +-10 grid is above 0 exactly where the share of "on" cells is above 1/2.
        margin = int(8 / self.scale) + 2
        r0, r1 = max(fy0 - margin, 0), min(fy0 + (y1 - y0) + margin, self.size[0])
        c0, c1 = max(fx0 - margin, 0), min(fx0 + (x1 - x0) + margin, self.size[1])
        drawn = self.rows[r0:r1] @ on.astype(np.float64) @ self.cols[c0:c1].T > 0.5
        truth = np.zeros_like(drawn)
        truth[fy0 - r0 : fy0 - r0 + (y1 - y0), fx0 - c0 : fx0 - c0 + (x1 - x0)] = shape.mask
        union = (drawn | truth).sum()
        return float((drawn & truth).sum() / union) if union else 0.0


def _self_check(model: torch.nn.Module) -> None:
    """The grid's matrices are `Sam.postprocess_masks`' interpolations: checked on one small random case."""
    img_size = model.image_encoder.img_size
    grid = Grid(37, 53, img_size)
    logits = torch.randn(1, 1, grid.cells, grid.cells, dtype=torch.float64)
    expected = model.postprocess_masks(logits, get_preprocess_shape(37, 53, img_size), (37, 53))[0, 0].numpy()
    assert np.allclose(grid.rows @ logits[0, 0].numpy() @ grid.cols.T, expected, atol=1e-9), "grid operator is off"


def _owner(windows: list[Window], xy: tuple[float, float]) -> Window:
    x, y = int(xy[0]), int(xy[1])
    return next(w for w in windows if w.owned[0] <= x < w.owned[2] and w.owned[1] <= y < w.owned[3])


def _iou(mask: np.ndarray, shape: Shape) -> float:
    x0, y0, x1, y1 = shape.box
    inside = (mask[y0:y1, x0:x1] & shape.mask).sum()
    union = mask.sum() + shape.mask.sum() - inside
    return float(inside / union) if union else 0.0


def _segment(run, shapes: list[Shape]) -> list[float]:
    """IoU per object of `run(prompts)` -> Results, CHUNK objects at a time."""
    ious: list[float] = []
    for start in range(0, len(shapes), CHUNK):
        chunk = shapes[start : start + CHUNK]
        result = run([make_prompt([shape.centre], [1]) for shape in chunk])
        ious.extend(_iou(mask, shape) for mask, shape in zip(np.asarray(result.masks), chunk))
    return ious


def _summary(ious: list[float]) -> str:
    values = np.asarray(ious)
    return f"{values.mean():.3f} | {(values >= 0.5).mean() * 100:.0f}%"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="8000x6000", help="WIDTHxHEIGHT of the generated image")
    parser.add_argument("--objects", type=int, default=300)
    parser.add_argument("--tile", type=int, default=1024)
    parser.add_argument("--halo", type=int, default=128)
    parser.add_argument("--model", help="checkpoint (default: seeded random vit_t, whose masks mean nothing)")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-model", action="store_true", help="only the resolution bound")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    width, height = (int(v) for v in args.size.lower().split("x"))
    image, shapes = make_scene(width, height, args.objects, args.seed)
    model = load_sam(args.model) if args.model else randomize(build_sam("vit_t"), seed=args.seed)
    img_size = model.image_encoder.img_size
    _self_check(model)
    windows = tile_windows(height, width, args.tile, args.halo)

    whole = Grid(height, width, img_size)
    window_grids: dict[tuple[int, int], Grid] = {}
    bound_whole, bound_tiles = [], []
    for shape in shapes:
        window = _owner(windows, shape.centre)
        grid = window_grids.setdefault(window.size, Grid(*window.size, img_size))
        bound_whole.append(whole.best_iou(shape, (0, 0)))
        bound_tiles.append(grid.best_iou(shape, window.offset))

    print(f"machine: {machine_summary()}")
    print(
        f"image {width}x{height}, {len(shapes)} objects of {SIZES[0]}-{SIZES[1]} px (discs, squares, triangles), "
        f"seed {args.seed}; tiles {args.tile} px, halo {args.halo}: {len(windows)} windows; "
        f"model {args.model or 'seeded random vit_t'}, backend {args.backend}"
    )
    print(
        f"a low-res logit cell is {max(width, height) / whole.cells:.1f} px on the whole image, "
        f"{max(windows[0].size) / whole.cells:.1f} px on a window"
    )
    print("\n1. resolution bound: each object's ideal +-10 logit grid, upscaled as Sam.postprocess_masks, against the truth")
    print("| objects | whole image mIoU | IoU >= 0.5 | tiles mIoU | IoU >= 0.5 |")
    print("|---|---|---|---|---|")
    print(f"| all {len(shapes)} | {_summary(bound_whole)} | {_summary(bound_tiles)} |")
    for low, high in BUCKETS:
        picked = [i for i, s in enumerate(shapes) if low <= s.side <= high]
        if picked:
            print(
                f"| {low}-{high} px ({len(picked)}) | {_summary([bound_whole[i] for i in picked])} "
                f"| {_summary([bound_tiles[i] for i in picked])} |"
            )
    if args.skip_model:
        return 0

    predictor = SamPredictor(model, args.backend)
    predictor.embed(image[:64, :64])  # warm-up (and a graph engine's export), not timed
    start = time.perf_counter()
    embedding = predictor.embed(image)
    whole_ious = _segment(lambda prompts: segment_prompts(predictor, embedding, prompts, image), shapes)
    whole_s = time.perf_counter() - start
    start = time.perf_counter()
    clicks = [make_prompt([shape.centre], [1]) for shape in shapes]
    tiled = embed_tiles(predictor, image, args.tile, args.halo, prompts=clicks)
    tiled_ious = _segment(lambda prompts: segment_tiled(predictor, tiled, prompts, image), shapes)
    tiled_s = time.perf_counter() - start
    print(f"\n2. one click per object with {args.model or 'seeded random weights (the mIoU means nothing)'}")
    print("| run | windows embedded | mIoU | objects at IoU >= 0.5 | seconds |")
    print("|---|---|---|---|---|")
    print(f"| whole image | 1 | {_summary(whole_ious)} | {whole_s:.1f} |")
    print(f"| tiles | {len(tiled.embeddings)} of {len(windows)} | {_summary(tiled_ious)} | {tiled_s:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
