"""`EmbeddingStore`: image embeddings kept on disk, found again by the image's pixels and the model that made them.

Layout of a store folder (portable: no pickle, nothing executes on load)::

    ROOT/store.json                      {"format": "mobilesam-embeddings", "version": 1, "model": "vit_t",
                                          "weights_sha256": "...", "image_size": 1024, "dtype": "float32"}
    ROOT/<digest[:2]>/<digest>.safetensors

`digest` is `mobilesam.io.images.pixels_digest` of the (H, W, 3) uint8 RGB
image, so the same pixels under another file name are found. Each file holds
one tensor, "features" (1, C, h, w) in the store's dtype (float32, or float16
for half the bytes), and the metadata "original_size" and "input_size" as
"H,W" text: the two sizes of `ImageEmbedding`. `weights_sha256` is the hash of the
weights and of the input size and pixel format (`weights.state_digest`), so
another checkpoint, fine-tune or input size never reads this store, while
an upgrade of mobilesam or torch still does. Every file is written atomically.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as save_safetensors

from .atomic import write_bytes_atomic, write_text_atomic
from .backends.base import weights_stamp
from .embedding import ImageEmbedding
from .errors import MobileSamError
from .io.images import pixels_digest
from .modeling import Sam
from .registry import model_name
from .weights import state_digest

STORE_FILE = "store.json"
FORMAT = "mobilesam-embeddings"
VERSION = 1
_DTYPES = {"float32": torch.float32, "float16": torch.float16}
# What must agree between a store and a model for the store's embeddings to be that model's.
_IDENTITY_KEYS = ("model", "weights_sha256", "image_size")


class EmbeddingStoreError(MobileSamError, ValueError):
    """A store that cannot be used with this model, or a stored file that cannot be read; the message names it."""


def model_identity(model: Sam) -> dict[str, str | int]:
    """What names the embeddings `model` makes: its registered name, its weights' hash and its input size."""
    weights = state_digest(model, f"image {model.img_size} {model.image_format}")
    return {"model": model_name(model), "weights_sha256": weights, "image_size": model.image_encoder.img_size}


class EmbeddingStore:
    """A folder of embeddings made by one model, keyed by the pixels' hash.

    Args:
        root: The store's folder; created, with its `store.json`, if it does not exist.
        model: The model whose embeddings the store holds.
        half: Keep new embeddings in float16 (half the bytes). None: the existing store's
            dtype, or float32 for a new store.
        recompute: Embed again, and rewrite, an image whose stored file cannot be read
            (instead of raising).

    Raises:
        EmbeddingStoreError: The folder holds another model's store (the message names both
            identities), its `store.json` is unreadable, or `half` contradicts its dtype.
    """

    def __init__(self, root: str | os.PathLike[str], model: Sam, *, half: bool | None = None, recompute: bool = False) -> None:
        self.root = Path(root)
        self.model = model
        self.recompute = recompute
        self._warned = False
        self.identity = model_identity(model)
        # Models (by id) already found to make this store's embeddings, with their weights' stamp then.
        self._verified = {id(model): weights_stamp(model)}
        self.dtype = self._open(half)

    def _open(self, half: bool | None) -> str:
        header = self.root / STORE_FILE
        wanted = None if half is None else ("float16" if half else "float32")
        if not header.exists():
            dtype = wanted or "float32"
            self.root.mkdir(parents=True, exist_ok=True)
            write_text_atomic(
                header, json.dumps({"format": FORMAT, "version": VERSION, **self.identity, "dtype": dtype}, indent=2)
            )
            return dtype
        try:
            stored = json.loads(header.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise EmbeddingStoreError(f"{header} is not a readable embedding store header: {err}") from err
        if not isinstance(stored, dict) or stored.get("format") != FORMAT or stored.get("dtype") not in _DTYPES:
            raise EmbeddingStoreError(f"{header} is not a mobilesam embedding store header")
        if stored.get("version") != VERSION:
            raise EmbeddingStoreError(f"{header} has format version {stored.get('version')!r}; this mobilesam reads {VERSION}")
        theirs = {key: stored.get(key) for key in _IDENTITY_KEYS}
        if theirs != self.identity:
            raise EmbeddingStoreError(
                f"the embedding store {self.root} was made by another model or input size: "
                f"store {_describe(theirs)}, model {_describe(self.identity)}"
            )
        if wanted is not None and wanted != stored["dtype"]:
            raise EmbeddingStoreError(f"the embedding store {self.root} holds {stored['dtype']}, not {wanted}")
        return stored["dtype"]

    def path(self, digest: str) -> Path:
        """Where the embedding of the image with this pixels' digest lives (whether or not it exists)."""
        return self.root / digest[:2] / f"{digest}.safetensors"

    def __contains__(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def holds(self, digest: str) -> bool:
        """Whether the store has this digest's embedding; a store that recomputes reads the file, and a damaged one is missing."""
        if digest not in self:
            return False
        if not self.recompute:
            return True
        try:
            self.load(digest)
        except EmbeddingStoreError:
            return False
        return True

    def load(self, digest: str, device: torch.device | str = "cpu") -> ImageEmbedding[torch.Tensor] | None:
        """The stored embedding of this digest as float32 on `device`, or None if there is none.

        Raises:
            EmbeddingStoreError: The file exists but is truncated, corrupt or not an embedding.
        """
        path = self.path(digest)
        if not path.is_file():
            return None
        try:
            with safe_open(path, framework="pt") as reader:
                metadata = reader.metadata() or {}
                features = reader.get_tensor("features")
            embedding = ImageEmbedding(features, _size(metadata["original_size"]), _size(metadata["input_size"]))
        except (SafetensorError, OSError, KeyError, ValueError) as err:
            raise EmbeddingStoreError(f"stored embedding {path} cannot be read ({err}); delete it or embed again") from err
        if features.dtype != _DTYPES[self.dtype]:
            raise EmbeddingStoreError(f"stored embedding {path} is {features.dtype}, the store holds {self.dtype}")
        return ImageEmbedding(features.to(device=device, dtype=torch.float32), embedding.original_size, embedding.input_size)

    def save(self, digest: str, embedding: ImageEmbedding[torch.Tensor]) -> Path:
        """Write `embedding` under `digest`, in the store's dtype, atomically."""
        features = embedding.features.detach().to(device="cpu", dtype=_DTYPES[self.dtype]).contiguous()
        metadata = {"original_size": _text(embedding.original_size), "input_size": _text(embedding.input_size)}
        return write_bytes_atomic(self.path(digest), save_safetensors({"features": features}, metadata))

    def check_model(self, model: Sam) -> None:
        """Raise unless `model` makes this store's embeddings (same name, weights and input size).

        Raises:
            EmbeddingStoreError: It does not; the message names both identities.
        """
        stamp = weights_stamp(model)
        if id(model) in self._verified and self._verified[id(model)] == stamp:
            return
        identity = model_identity(model)
        if identity != self.identity:
            raise EmbeddingStoreError(
                f"the model is not the one of the embedding store {self.root}: "
                f"store {_describe(self.identity)}, model {_describe(identity)}"
            )
        self._verified[id(model)] = stamp

    def embedding(
        self,
        image: np.ndarray,
        embed: Callable[[np.ndarray], ImageEmbedding[torch.Tensor]],
        device: torch.device | str = "cpu",
    ) -> ImageEmbedding[torch.Tensor]:
        """The image's embedding: the stored one if present, else `embed(image)`, stored now.

        Args:
            image: (H, W, 3) uint8 RGB image.
            embed: Computes the embedding of an image that is not stored (the store's model's encoder).
            device: Where a stored embedding is put.

        Returns:
            The embedding in float32.

        Raises:
            EmbeddingStoreError: The stored file is unreadable (unless the store recomputes).

        A store that cannot be written (read-only, full) warns once and returns what `embed` computed.
        """
        digest = pixels_digest(image)
        try:
            stored = self.load(digest, device)
        except EmbeddingStoreError:
            if not self.recompute:
                raise
            stored = None
        if stored is not None:
            return stored
        embedding = embed(image)
        try:
            self.save(digest, embedding)
        except OSError as err:
            # A read-only or full store still serves what it holds; the run goes on without storing.
            if not self._warned:
                warnings.warn(f"the embedding store {self.root} cannot store new embeddings: {err}", RuntimeWarning, stacklevel=2)
                self._warned = True
        return embedding


def _describe(identity: dict) -> str:
    return f"{identity['model']} at {identity['image_size']} px, weights {str(identity['weights_sha256'])[:12]}"


def _text(size: tuple[int, int]) -> str:
    return f"{size[0]},{size[1]}"


def _size(text: str) -> tuple[int, int]:
    height, width = (int(part) for part in text.split(","))
    return height, width
