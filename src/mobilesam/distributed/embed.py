"""`mobilesam embed --ray`: fill an embedding store from a Ray cluster, one model per actor.

The driver opens the store once (writing its `store.json`, refusing another
model's store) and lists the images; each `Embedder` actor loads the model
once, reads its images, and embeds and stores those whose pixels are not
stored yet. Whether an image is stored is known only from its pixels, so the
actors, not the driver, decide it; every file is written atomically, so
actors storing the same pixels at once leave one whole file.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ..embedding_store import EmbeddingStore
from ..io.images import DEFAULT_MAX_PIXELS
from ..io.sources import ImageJob
from ..predictor import SamPredictor
from ..tiling import check_tiling, embed_into_store
from .refs import ImageRef, find_images
from .run import check_resources, connected, default_workers, import_ray, load_on_driver, map_on_actors, own_progress
from .worker import ModelSpec, read_image

EMBEDDED, STORED = "embedded", "stored"


@dataclass
class EmbedSummary:
    """What an embedding run did.

    Attributes:
        total: Images the source named.
        embedded: Images embedded and stored in this run.
        stored: Images whose pixels the store held already.
        failures: (image, reason) for each image that could not be read.
        seconds: Wall time of the run.
        workers: Actors that ran the model (no more than there were images).
        backends: The backends they ran, sorted.
    """

    total: int = 0
    embedded: int = 0
    stored: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    workers: int = 0
    backends: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """One line for the end of a run, as the local `mobilesam embed` prints it."""
        return f"{self.embedded} embedded, {self.stored} already stored, {len(self.failures)} failed"


class Embedder:
    """The callable class of `map_batches`: one per actor, it loads the model once and stores each batch's embeddings.

    Pixels and embeddings never travel through Ray: each row comes back as
    (index, "embedded" or "stored" or "", error or "", backend name).

    Args:
        spec: The model to load; `spec.embeddings` is the store, which the driver has created.
        max_pixels: Largest width x height of an image file, checked before it is decoded.
        tile_shape: Store each image's windows of this tiling instead of the whole image (`mobilesam.tiling`).
        halo: With `tile_shape`, the tiling's halo.
        recompute: Embed again the images whose stored file is damaged.
    """

    def __init__(
        self, spec: ModelSpec, max_pixels: int, tile_shape: int | None = None, halo: int = 0, recompute: bool = False
    ) -> None:
        sam, backend = spec.load()
        store = spec.store(sam, recompute)
        if store is None:
            raise ValueError("an Embedder needs the spec of a store: ModelSpec(embeddings=...)")
        self._predictor = SamPredictor(sam, backend, store)
        self._backend = backend.name
        self._max_pixels = max_pixels
        self._tiling = (tile_shape, halo)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Embed the batch's images that are not stored: columns "index" and "image" in, one outcome each out."""
        outcomes, errors = [], []
        for image in batch["image"]:
            rgb = read_image(image, self._max_pixels)
            if isinstance(rgb, Exception):
                outcomes.append("")
                errors.append(str(rgb))
                continue
            outcomes.append(EMBEDDED if embed_into_store(self._predictor, rgb, *self._tiling) else STORED)
            errors.append("")
        return {
            "index": batch["index"],
            "outcome": np.asarray(outcomes, dtype=object),
            "error": np.asarray(errors, dtype=object),
            "backend": np.asarray([self._backend] * len(outcomes), dtype=object),
        }


def embed_on_ray(
    source: str | os.PathLike[str] | Sequence[ImageRef | ImageJob],
    store_root: str | os.PathLike[str],
    spec: ModelSpec,
    *,
    half: bool = False,
    address: str | None = None,
    workers: int | None = None,
    threads_per_worker: int = 1,
    gpus_per_worker: float = 0.0,
    progress: bool = True,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    tile_shape: int | None = None,
    halo: int = 0,
    recompute: bool = False,
) -> EmbedSummary:
    """Embed every image of `source` into the store at `store_root` on a Ray cluster, as `mobilesam embed` does here.

    The store is opened here first (created with its `store.json` if new), so a
    store of another model fails before any actor starts. Images whose pixels
    are stored already are read but not embedded again; an image that cannot
    be read is counted in `failures` and the run goes on.

    Args:
        source: What `find_images` takes (file, folder, glob, prompts file, or a
            URI), or references found already.
        store_root: The store's folder, on a filesystem every node shares.
        spec: The model the actors load, with its backend and device; its `threads`
            and `embeddings` are set here from `threads_per_worker` and `store_root`.
        half: Store float16 embeddings; False keeps an existing store's dtype (float32 for a new store).
        address: Ray's address, as `mobilesam.distributed.label` takes it.
        workers: Actors; None: as many as the cluster's CPUs (or GPUs) hold.
        threads_per_worker: CPUs of each actor, and its torch / engine threads.
        gpus_per_worker: GPUs of each actor, fractions allowed (with device "cuda").
        progress: Show a progress bar on stderr.
        max_pixels: Largest width x height of an image file, checked before it is decoded.
        tile_shape: Store each image's windows of this tiling (`mobilesam.tiling`) instead of the whole image.
        halo: With `tile_shape`, the tiling's halo.
        recompute: Embed again the images whose stored file is damaged (every stored file is read to check).

    Returns:
        The summary; its `failures` name images as the source gave them.

    Raises:
        ImportError: Ray Data is not installed (pip install 'mobilesam[ray]').
        EmbeddingStoreError: The store holds another model's embeddings, or not the dtype `half` asks.
        ValueError: Bad resources or tiling, or a source that names no images.
        MobileSamError, OSError: The model or the source cannot be read.
        RuntimeError: The Ray run stopped: an actor failed to start, or the model failed on an image.
    """
    started = time.perf_counter()
    check_tiling(tile_shape, halo)
    ray = import_ray()
    check_resources(workers, threads_per_worker, gpus_per_worker, spec.device)
    root = Path(os.path.abspath(store_root))
    if isinstance(source, (str, os.PathLike)):
        refs = find_images(source, exclude=root)
    else:
        refs = [ref if isinstance(ref, ImageRef) else ImageRef.from_job(ref) for ref in source]
    spec = _for_actors(spec, root, threads_per_worker)
    sam, _ = load_on_driver(spec)
    # Written here once, so the actors find the store's dtype; another model's store fails before any actor starts.
    EmbeddingStore(root, sam, half=True if half else None)
    summary = EmbedSummary(total=len(refs))
    if refs:
        with connected(ray, address), own_progress(ray):
            # No more actors than images: each would load the model for nothing.
            summary.workers = min(workers or default_workers(ray, threads_per_worker, gpus_per_worker), len(refs))
            rows = [{"index": index, "image": ref.readable()} for index, ref in enumerate(refs)]
            done = map_on_actors(
                ray,
                rows,
                Embedder,
                (spec, max_pixels, tile_shape, halo, recompute),
                summary.workers,
                threads_per_worker,
                gpus_per_worker,
            )
            _tally(done, refs, summary, progress)
    summary.seconds = time.perf_counter() - started
    return summary


def _for_actors(spec: ModelSpec, root: Path, threads: int) -> ModelSpec:
    """`spec` with absolute paths (actors have working folders of their own), the store, and each actor's threads."""
    # A name that is no file here stays a name (a known checkpoint or model name).
    model = os.path.abspath(spec.model) if os.path.exists(spec.model) else spec.model
    onnx_dir = None if spec.onnx_dir is None else os.path.abspath(spec.onnx_dir)
    return dataclasses.replace(spec, model=model, onnx_dir=onnx_dir, threads=threads, embeddings=os.fspath(root))


def _tally(rows: Iterator[dict[str, Any]], refs: Sequence[ImageRef], summary: EmbedSummary, progress: bool) -> None:
    """Count each image's row into `summary` as it comes, under a progress bar, with the backends that ran."""
    backends = set()
    with tqdm(total=len(refs), unit="img", disable=not progress, dynamic_ncols=True) as bar:
        for row in rows:
            if row["error"]:
                summary.failures.append((refs[row["index"]].image, row["error"]))
            elif row["outcome"] == EMBEDDED:
                summary.embedded += 1
            else:
                summary.stored += 1
            backends.add(row["backend"])
            bar.update()
            bar.set_postfix(embedded=summary.embedded, stored=summary.stored, failed=len(summary.failures), refresh=False)
    summary.backends = sorted(backends)
