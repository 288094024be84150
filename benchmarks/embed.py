"""The embedding store: images/s into it, its bytes per image, and a click on a stored image in a fresh process.

    python benchmarks/embed.py [--model mobile_sam.pt] [--backend auto] [--threads 2] [--images 8] [--repeats 3] [--tiles]

Everything is measured in the same run, against a baseline of the same run:

- images/s of `mobilesam embed`'s steps per image (read the file, hash its
  pixels, embed, write the store file atomically) into a new store, fp32 and
  fp16 (`--half`), against the encoder alone on decoded pixels: the store's
  overhead. And a rerun over the full store (read and hash only).
- bytes per image on disk, fp32 and fp16.
- a click on a stored image in a fresh Python process (load the model, open
  the store, `set_image`, one point), against a fresh process that embeds the
  image and clicks: from process start to mask, and the part inside the
  process after its imports.
- the masks of the fp16 store against the fp32 store's (IoU over a few
  clicks per image); the fp32 store's masks must be the encoder's exactly, or
  the run exits 1.

The model is `--model`, else `mobile_sam.pt` in the working folder if it is
there, else seeded random vit_t weights saved as a checkpoint in a temporary
folder (the fresh processes load that checkpoint). Images are scikit-image's
photos, each made unique by a stamped pixel, written as PNG files.

With `--tiles`, the large-image section follows: `benchmarks/tiles.py` at its
defaults (small objects on a generated 8000x6000 image, whole against tiles).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from skimage import data

from mobilesam import SamPredictor, build_sam, load_sam
from mobilesam.backends import BACKENDS, Backend, make_backend
from mobilesam.bench import machine_summary
from mobilesam.embedding_store import EmbeddingStore
from mobilesam.io.images import load_image, pixels_digest
from mobilesam.modeling import Sam
from mobilesam.weights import save_checkpoint

# The seeded weights live with the tests; tiles is benchmarks/tiles.py beside this script (the large-image section).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import tiles

from reference import randomize

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "cat")
# Clicks of the fp16 agreement, as fractions of (width, height): the centre and the four quadrants' centres.
CLICKS = ((0.5, 0.5), (0.25, 0.25), (0.75, 0.25), (0.25, 0.75), (0.75, 0.75))
AGREEMENT_IMAGES = 3

# A fresh process's click: what a labelling script does the next morning. Argv: model image store-or-"" backend threads x y.
CLICK = """
import json, sys, time
import numpy as np
import torch
from mobilesam import SamPredictor, load_sam
from mobilesam.io.images import load_image
model, image, store, backend, threads, x, y = sys.argv[1:]
torch.set_num_threads(int(threads))
started = time.perf_counter()
predictor = SamPredictor(load_sam(model), backend, embeddings=store or None)
loaded = time.perf_counter()
predictor.set_image(load_image(image))
embedded = time.perf_counter()
masks, _, _ = predictor.predict(np.array([[float(x), float(y)]]), np.array([1]), multimask_output=False)
done = time.perf_counter()
print(json.dumps({"mask_at": time.time(), "load_s": loaded - started, "image_s": embedded - loaded,
                  "click_s": done - embedded, "pixels": int(masks.sum())}))
"""


@dataclass
class Bench:
    """What every section shares: the options, the model (in memory and as a checkpoint), its backend, the images."""

    args: argparse.Namespace
    sam: Sam
    checkpoint: Path
    weights: str
    backend: Backend
    images: list[Path]
    workdir: Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="checkpoint (default: mobile_sam.pt if here, else seeded random vit_t)")
    parser.add_argument("--backend", default="auto", choices=["auto", *BACKENDS])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--images", type=int, default=8, help="images embedded into each store")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each measurement; the median is shown")
    parser.add_argument(
        "--tiles",
        action="store_true",
        help="then the large-image section: benchmarks/tiles.py at its defaults (8000x6000, tiles of 1024, halo 128)",
    )
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        bench = setup(args, Path(tmp))
        print(f"machine: {machine_summary()}")
        print(
            f"model {bench.checkpoint} ({bench.weights}), backend {bench.backend.name}, {args.threads} threads, "
            f"{args.images} images, median of {args.repeats}"
        )
        status = section_store(bench)
    if args.tiles and status == 0:
        print("\n## Large images by tiles (benchmarks/tiles.py)")
        status = tiles.main(
            ["--backend", args.backend, "--threads", str(args.threads), *(["--model", args.model] if args.model else [])]
        )
    return status


def setup(args: argparse.Namespace, workdir: Path) -> Bench:
    """The model, its checkpoint, its backend and the images on disk."""
    if args.model:
        checkpoint, weights = Path(args.model), "given"
    elif Path("mobile_sam.pt").is_file():
        checkpoint, weights = Path("mobile_sam.pt"), "found here"
    else:
        checkpoint, weights = save_checkpoint(randomize(build_sam("vit_t"), seed=0), workdir / "random_vit_t.pt"), "seeded random"
    sam = load_sam(checkpoint)
    images = []
    (workdir / "images").mkdir()
    for index in range(args.images):
        rgb = getattr(data, PHOTOS[index % len(PHOTOS)])().copy()
        # Each image its own pixels, so that each is embedded and stored once.
        rgb[0, 0] = (index % 256, index // 256 % 256, 0)
        images.append(workdir / "images" / f"image{index:03d}.png")
        Image.fromarray(rgb).save(images[-1])
    return Bench(args, sam, checkpoint.resolve(), weights, make_backend(args.backend, sam, threads=args.threads), images, workdir)


def section_store(bench: Bench) -> int:
    """Images/s into a store and its bytes per image, a click in a fresh process, fp16 against fp32; 1 if fp32 is not exact."""
    stores = _throughput(bench)
    _click_in_fresh_processes(bench, stores["float32"])
    return _fp16_agreement(bench, stores["float32"], stores["float16"])


def _throughput(bench: Bench) -> dict[str, Path]:
    """Print images/s of the encoder alone, of `mobilesam embed`'s steps into new fp32 and fp16 stores, and of a rerun;
    and the stores' bytes per image. Returns the last repeat's store folder of each dtype."""
    predictor = SamPredictor(bench.sam, bench.backend)
    pixels = [load_image(path) for path in bench.images]
    predictor.embed(pixels[0])  # warm-up: allocator, kernels
    seconds: dict[str, list[float]] = {"encoder alone": [], "store fp32": [], "store fp16": [], "rerun, all stored": []}
    stores: dict[str, Path] = {}
    for repeat in range(bench.args.repeats):
        seconds["encoder alone"].append(_timed(_embed_all, predictor, pixels))
        for half in (False, True):
            store = EmbeddingStore(bench.workdir / f"store{repeat}_{'fp16' if half else 'fp32'}", bench.sam, half=half)
            seconds[f"store {'fp16' if half else 'fp32'}"].append(_timed(_embed_into, store, predictor, bench.images))
            stores[store.dtype] = store.root
        seconds["rerun, all stored"].append(_timed(_embed_into, store, predictor, bench.images))
    count = len(bench.images)
    baseline = count / statistics.median(seconds["encoder alone"])
    print("\n## Embedding into a store")
    print(f"{'path':<20}{'images/s':>10}{'x encoder':>11}")
    for name, runs in seconds.items():
        rate = count / statistics.median(runs)
        print(f"{name:<20}{rate:>10.2f}{rate / baseline:>11.2f}")
    for dtype, root in stores.items():
        files = list(root.rglob("*.safetensors"))
        size = sum(file.stat().st_size for file in files) / len(files)
        print(f"{dtype} store: {size:,.0f} bytes ({size / 2**20:.2f} MiB) per image, {len(files)} files")
    return stores


def _embed_all(predictor: SamPredictor, pixels: list[np.ndarray]) -> None:
    for rgb in pixels:
        predictor.embed(rgb)


def _embed_into(store: EmbeddingStore, predictor: SamPredictor, images: list[Path]) -> None:
    """`mobilesam embed`'s steps for each image: read, hash, and embed and store it unless stored."""
    for path in images:
        rgb = load_image(path)
        digest = pixels_digest(rgb)
        if digest not in store:
            store.save(digest, predictor.embed(rgb))


def _click_in_fresh_processes(bench: Bench, store: Path) -> None:
    """Print the median time to a mask of a fresh process clicking a stored image against one that embeds it."""
    image = bench.images[0]
    width, height = Image.open(image).size
    kinds = {"stored": store, "embeds": None}
    runs: dict[str, list[dict[str, float]]] = {kind: [] for kind in kinds}
    for repeat in range(bench.args.repeats + 1):
        for kind, root in kinds.items():
            run = _fresh_click(bench, image, root, width / 2, height / 2)
            if repeat:  # the first of each warms the disk cache and any compiled kernels' cache
                runs[kind].append(run)
    print("\n## A click in a fresh process (process start to mask = start and imports + in process: load, image, click)")
    print(f"{'image':<8}{'to mask s':>11}{'imports s':>11}{'in process s':>14}{'load s':>9}{'image s':>9}{'click s':>9}")
    totals = {}
    for kind, results in runs.items():
        totals[kind] = statistics.median(r["total_s"] for r in results)
        inside = statistics.median(r["load_s"] + r["image_s"] + r["click_s"] for r in results)
        parts = [statistics.median(r[key] for r in results) for key in ("load_s", "image_s", "click_s")]
        row = f"{kind:<8}{totals[kind]:>11.2f}{totals[kind] - inside:>11.2f}{inside:>14.2f}"
        print(row + "".join(f"{part:>9.3f}" for part in parts))
    print(f"a stored image reaches its mask {totals['embeds'] / totals['stored']:.2f}x sooner from process start")


def _fresh_click(bench: Bench, image: Path, store: Path | None, x: float, y: float) -> dict[str, float]:
    """One fresh process's click: its own times, and `total_s` from its start to its mask."""
    argv = [str(bench.checkpoint), str(image), "" if store is None else str(store), bench.backend.name, str(bench.args.threads)]
    started = time.time()
    done = subprocess.run([sys.executable, "-c", CLICK, *argv, str(x), str(y)], capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"the fresh click process failed:\n{done.stderr}")
    result = json.loads(done.stdout.splitlines()[-1])
    return {**result, "total_s": result["mask_at"] - started}


def _fp16_agreement(bench: Bench, fp32: Path, fp16: Path) -> int:
    """Print the IoU of the fp16 store's masks with the fp32 store's, which must equal the encoder's; 1 if they do not."""
    direct = SamPredictor(bench.sam, bench.backend)
    stored = {name: SamPredictor(bench.sam, bench.backend, embeddings=root) for name, root in (("fp32", fp32), ("fp16", fp16))}
    ious, exact = [], True
    for path in bench.images[:AGREEMENT_IMAGES]:
        rgb = load_image(path)
        masks = {name: _click_masks(predictor, rgb) for name, predictor in [("direct", direct), *stored.items()]}
        exact &= all(np.array_equal(a, b) for a, b in zip(masks["direct"], masks["fp32"]))
        ious += [_iou(a, b) for a, b in zip(masks["fp32"], masks["fp16"])]
    clicks = len(ious)
    print(f"\n## fp16 store against fp32 ({clicks} clicks on {min(len(bench.images), AGREEMENT_IMAGES)} images)")
    print(f"mask IoU: lowest {min(ious):.4f}, mean {statistics.mean(ious):.4f}; fp32 store = encoder's masks: {exact}")
    return 0 if exact else 1


def _click_masks(predictor: SamPredictor, rgb: np.ndarray) -> list[np.ndarray]:
    predictor.set_image(rgb)
    height, width = rgb.shape[:2]
    masks = []
    for fx, fy in CLICKS:
        mask, _, _ = predictor.predict(np.array([[fx * width, fy * height]]), np.array([1]), multimask_output=False)
        masks.append(mask[0])
    return masks


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def _timed(work: Callable[..., object], *args: object) -> float:
    start = time.perf_counter()
    work(*args)
    return time.perf_counter() - start


if __name__ == "__main__":
    sys.exit(main())
