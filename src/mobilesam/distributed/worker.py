"""What runs inside each Ray actor: the model, loaded once, and the labeling of each batch of images.

Torch-heavy, Ray-free: Ray Data constructs `Labeler` in each actor and calls it on batches.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..backends import Backend, make_backend
from ..embedding_store import EmbeddingStore
from ..io.images import load_image
from ..io.remote import is_uri, load_uri_image
from ..labeling import label_one
from ..modeling import Sam
from ..registry import load_sam
from ..tasks import LabelingTask


@dataclass(frozen=True)
class ModelSpec:
    """The model an actor loads, as the local run's --model, --backend, --onnx-dir, --device and --threads name it.

    Attributes:
        model: Checkpoint path (which every node must see), known checkpoint name, or model name.
        backend: A name of `mobilesam.backends.BACKENDS`, or "auto": the pick for the actor's own machine.
        onnx_dir: Folder written by `mobilesam export`, for the graph backends.
        device: Torch device of the actors ("cuda" when Ray gives them GPUs).
        threads: Intra-op threads of torch and of the graph engines.
        embeddings: An embedding store's folder, which every node must see, or None.
    """

    model: str = "mobile_sam.pt"
    backend: str = "auto"
    onnx_dir: str | None = None
    device: str = "cpu"
    threads: int | None = None
    embeddings: str | None = None

    def load(self) -> tuple[Sam, Backend]:
        """The model on its device, and its backend.

        Raises:
            MobileSamError, OSError, ValueError: The model cannot be found or read.
            ImportError, FileNotFoundError, RuntimeError: The backend cannot start.
        """
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        sam = load_sam(self.model, device=self.device)
        return sam, make_backend(self.backend, sam, onnx_dir=self.onnx_dir, threads=self.threads)

    def store(self, sam: Sam, recompute: bool = False) -> EmbeddingStore | None:
        """The embedding store of `sam`, or None without one; `recompute` embeds again what a damaged file held.

        Raises:
            EmbeddingStoreError: The store holds another model's embeddings.
        """
        return None if self.embeddings is None else EmbeddingStore(self.embeddings, sam, recompute=recompute)


class Labeler:
    """The callable class of `map_batches`: one per actor, it loads the model once and labels each batch.

    Each image is read here, in the actor, and its outputs are written here, so
    no pixels and no masks travel through Ray: a batch's rows come back as
    (index, masks written, error or "", backend name).

    Args:
        task: What to do to each image.
        spec: The model to load.
        out_dir: Output folder, absolute, on a filesystem every node shares.
        formats: Names from `mobilesam.io.writers.OUTPUT_FORMATS`.
        max_pixels: Largest width x height of an image file, checked before it is decoded.
    """

    def __init__(self, task: LabelingTask, spec: ModelSpec, out_dir: str, formats: Sequence[str], max_pixels: int) -> None:
        sam, backend = spec.load()
        self._segment = task.segmenter(sam, backend, spec.store(sam))
        self._backend = backend.name
        self._out_dir = Path(out_dir)
        self._formats = list(formats)
        self._max_pixels = max_pixels

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Label the batch's images: columns "index", "image", "stem", "objects" (pickled prompts) in, results out."""
        masks, errors = [], []
        for image, stem, objects in zip(batch["image"], batch["stem"], batch["objects"]):
            prompts = pickle.loads(objects)
            count, error = label_one(
                lambda rgb, objects=prompts, path=image: self._segment(rgb, objects, path),
                read_image(image, self._max_pixels),
                self._out_dir,
                stem,
                self._formats,
            )
            masks.append(count)
            errors.append(error or "")
        return {
            "index": batch["index"],
            "masks": np.asarray(masks, dtype=np.int64),
            "error": np.asarray(errors, dtype=object),
            "backend": np.asarray([self._backend] * len(masks), dtype=object),
        }


def read_image(image: str, max_pixels: int) -> np.ndarray | Exception:
    """The pixels of an image path or URI, or the error that reading them raised (for the actor to report)."""
    try:
        if is_uri(image):
            return load_uri_image(image, max_pixels=max_pixels)
        return load_image(image, max_pixels=max_pixels)
    except (OSError, ValueError) as err:
        return err
