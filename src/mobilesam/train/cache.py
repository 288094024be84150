"""The teacher-embedding cache: fp16 shards written once, read by distillation.

Layout of a cache folder::

    cache.json           what made it: teacher, weights, image size, flips, shard size
    shards/00012.npy     (N, C, S/16, S/16) float16 embeddings
    shards/00012.json    the N entries of that shard; written last, so it marks the shard done
    index.json           every entry (image, flipped, shard, row); written when all shards are

Every file is written through a temporary file and a rename, so an
interrupted run leaves whole shards only, and a rerun redoes just the rest.
At 1024 px a ViT-H embedding is 256 x 64 x 64 fp16 = 2 MiB per image.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ..atomic import atomic_path, write_text_atomic
from ..io.images import load_image
from ..io.sources import IMAGE_SUFFIXES
from ..modeling import Sam
from ..registry import load_from_config, resolve_checkpoint
from ..transforms import ResizeLongestSide
from .config import CacheConfig, ConfigError, model_config
from .distributed import distributed

CACHE_FORMAT = 1
# The settings that decide every embedding; a cache made with others cannot be extended.
_IDENTITY = ("teacher", "teacher_weights", "teacher_overrides", "image_size", "flips", "shard_size")


@dataclass(frozen=True)
class Entry:
    """One cached embedding: an image (relative to the images folder), maybe flipped."""

    image: str
    flipped: bool


@dataclass(frozen=True)
class CacheSummary:
    """What `cache_teacher` did."""

    entries: int
    shards: int
    computed: int  # embeddings computed by this run (0 when everything was cached)
    seconds: float


def list_images(root: str | os.PathLike[str]) -> list[str]:
    """Image files under `root` (recursively, hidden ones skipped) as sorted POSIX paths relative to it.

    Raises:
        FileNotFoundError: `root` is not a folder.
        ValueError: It holds no images.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"images folder not found: {root}")
    found = []
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        found += [
            (Path(directory) / name).relative_to(root).as_posix()
            for name in files
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES
        ]
    if not found:
        raise ValueError(f"no images in {root} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    return sorted(found)


def model_input(path: Path, flipped: bool, transform: ResizeLongestSide) -> torch.Tensor:
    """An image file as the model sees it before `Sam.preprocess`: (3, h, w) uint8, long side resized.

    The same resize as `SamPredictor.set_image`; a flip happens before the resize.
    """
    rgb = load_image(path)
    if flipped:
        rgb = np.ascontiguousarray(rgb[:, ::-1])
    return torch.from_numpy(transform.apply_image(rgb)).permute(2, 0, 1).contiguous()


def cache_teacher(config: CacheConfig, *, progress: bool = True) -> CacheSummary:
    """Run the teacher once per image (and flip) and store its embeddings as fp16 shards.

    Resumable: shards already complete are skipped; under `torchrun` each rank
    computes every world_size-th shard and rank 0 writes the index.

    Raises:
        ConfigError: The output folder holds a cache made with other settings.
        FileNotFoundError: No images folder or teacher checkpoint.
        CheckpointError: The teacher checkpoint does not fit the teacher architecture.
    """
    start = time.perf_counter()
    out = Path(config.out)
    images_root = Path(config.images).resolve()
    images = list_images(images_root)
    teacher_config = model_config(config.teacher, config.teacher_overrides, config.image_size)
    published = teacher_config.checkpoint.filename if teacher_config.checkpoint else ""
    weights_path = resolve_checkpoint(config.teacher_weights or published)
    meta = {
        "format": CACHE_FORMAT,
        "teacher": teacher_config.name,
        "teacher_weights": str(weights_path.resolve()),
        "teacher_overrides": dict(config.teacher_overrides),
        "image_size": config.image_size,
        "flips": config.flips,
        "shard_size": config.shard_size,
        "images_root": str(images_root),
    }
    entries = [Entry(image, flipped) for image in images for flipped in ((False, True) if config.flips else (False,))]
    shards = [entries[i : i + config.shard_size] for i in range(0, len(entries), config.shard_size)]
    with distributed(config.device) as ctx:
        if ctx.is_main:
            _check_or_write_meta(out, meta)
        ctx.barrier()
        mine = [i for i in range(len(shards)) if i % ctx.world_size == ctx.rank and not _shard_done(out, i, shards[i])]
        computed = 0
        if mine:
            teacher = load_from_config(teacher_config, weights_path).to(ctx.device).eval()
            total = sum(len(shards[i]) for i in mine)
            with tqdm(
                total=total, unit="img", desc="teacher", disable=not progress or not ctx.is_main, dynamic_ncols=True
            ) as bar:
                for index in mine:
                    _write_shard(out, index, shards[index], images_root, teacher, config.batch_size, bar)
                    computed += len(shards[index])
        ctx.barrier()
        if ctx.is_main:
            write_text_atomic(out / "index.json", json.dumps(_index(out, shards), indent=1))
        computed = sum(ctx.gather(computed))
    return CacheSummary(len(entries), len(shards), computed, time.perf_counter() - start)


def _check_or_write_meta(out: Path, meta: dict[str, Any]) -> None:
    path = out / "cache.json"
    if path.is_file():
        found = json.loads(path.read_text(encoding="utf-8"))
        changed = [k for k in _IDENTITY if found.get(k) != meta[k]]
        if changed:
            details = ", ".join(f"{k}: {found.get(k)!r} there, {meta[k]!r} now" for k in changed)
            raise ConfigError(f"{out} holds a cache made with other settings ({details}); choose another --out")
        return
    write_text_atomic(path, json.dumps(meta, indent=1))


def _shard_paths(out: Path, index: int) -> tuple[Path, Path]:
    return out / "shards" / f"{index:05d}.npy", out / "shards" / f"{index:05d}.json"


def _shard_done(out: Path, index: int, entries: list[Entry]) -> bool:
    array_path, list_path = _shard_paths(out, index)
    if not (array_path.is_file() and list_path.is_file()):
        return False
    listed = json.loads(list_path.read_text(encoding="utf-8"))
    return listed == [[e.image, e.flipped] for e in entries]


@torch.inference_mode()
def _write_shard(out: Path, index: int, entries: list[Entry], root: Path, teacher: Sam, batch_size: int, bar: tqdm) -> None:
    transform = ResizeLongestSide(teacher.img_size)
    parts = []
    for i in range(0, len(entries), batch_size):
        batch = entries[i : i + batch_size]
        images = [model_input(root / e.image, e.flipped, transform).to(teacher.device) for e in batch]
        pixels = torch.stack([teacher.preprocess(image.float()) for image in images])
        parts.append(teacher.image_encoder(pixels).to(torch.float16).cpu().numpy())  # (B, C, S/16, S/16)
        bar.update(len(batch))
    array_path, list_path = _shard_paths(out, index)
    with atomic_path(array_path) as tmp:
        np.save(tmp, np.concatenate(parts))
    write_text_atomic(list_path, json.dumps([[e.image, e.flipped] for e in entries]))


def _index(out: Path, shards: list[list[Entry]]) -> dict[str, Any]:
    rows = [[e.image, e.flipped, s, r] for s, shard in enumerate(shards) for r, e in enumerate(shard)]
    return {"format": CACHE_FORMAT, "shards": len(shards), "entries": rows}


class TeacherCache:
    """Read access to a finished cache; shards are memory-mapped on first use (per process).

    Args:
        path: The cache folder.

    Raises:
        FileNotFoundError: No finished cache there (index.json is written last).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        index_path = self.path / "index.json"
        if not index_path.is_file():
            raise FileNotFoundError(
                f"no finished teacher cache in {self.path} (no index.json); run `mobilesam train cache-teacher` first"
            )
        self.meta: dict[str, Any] = json.loads((self.path / "cache.json").read_text(encoding="utf-8"))
        index = json.loads(index_path.read_text(encoding="utf-8"))
        self.entries = [Entry(image, bool(flipped)) for image, flipped, _, _ in index["entries"]]
        self._rows = [(int(shard), int(row)) for _, _, shard, row in index["entries"]]
        self._open: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def __getstate__(self) -> dict[str, Any]:
        # Data-loader workers open their own memory maps instead of receiving copies of the arrays.
        return {**self.__dict__, "_open": {}}

    def embedding(self, i: int) -> torch.Tensor:
        """Entry `i`'s teacher embedding: (C, S/16, S/16) float32."""
        shard, row = self._rows[i]
        if shard not in self._open:
            self._open[shard] = np.load(_shard_paths(self.path, shard)[0], mmap_mode="r")
        return torch.from_numpy(np.array(self._open[shard][row], dtype=np.float32))
