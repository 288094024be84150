"""Checkpoint files: downloads into the cache, safe reading, strict loading and saving.

The only module that opens checkpoints or fetches them; which checkpoints
are published is the registry's to say (`registry.ModelConfig.checkpoint`).
Reading never runs pickled code (`torch.load(weights_only=True)` or
safetensors), and every problem with a file is one `CheckpointError` that
names the file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import re
import urllib.error
import urllib.request
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import safetensors
import safetensors.torch
import torch
from tqdm import tqdm

from .atomic import atomic_path
from .errors import CheckpointError, DownloadError

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20
_TIMEOUT_S = 60


@dataclass(frozen=True)
class Checkpoint:
    """A published checkpoint file: where to download it and how to check the copy."""

    filename: str
    urls: tuple[str, ...]  # the official one first, then mirrors
    sha256: str
    size: int | None = None  # bytes; None where the publisher gives none


# Wrappers and prefixes that trainers (DDP, Lightning, Ultralytics) put around a SAM state dict.
_WRAPPER_KEYS = ("model", "state_dict", "module")
_PREFIXES = ("module.", "model.", "_orig_mod.")
# torch.save writes a zip archive (PK..) or, in its legacy format, a pickle (protocol opcode 0x80).
_TORCH_MAGIC = (b"PK\x03\x04", b"\x80")
# Tensors some files carry that are derived from others, never learned.
_DERIVED_KEYS = re.compile(r"(attention_bias_idxs|\.ab)$")


def cache_dir() -> Path:
    """Where downloaded checkpoints live: $MOBILESAM_HOME, else ~/.cache/mobilesam."""
    return Path(os.environ.get("MOBILESAM_HOME") or Path.home() / ".cache" / "mobilesam")


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def state_digest(module: torch.nn.Module, salt: str = "") -> str:
    """Hex SHA-256 of `salt` and `module`'s parameters and buffers (names, dtypes, shapes, bytes).

    It names the weights themselves: a fine-tuned model in memory gets its own
    digest, and a checkpoint renamed or re-saved keeps its old one. `salt` adds
    what else a caller's result depends on.
    """
    digest = hashlib.sha256(salt.encode())
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(f"{name} {tensor.dtype} {tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def download(url: str, dest: str | os.PathLike[str], *, sha256: str | None = None, progress: bool = True) -> Path:
    """Download `url` to `dest` through a temporary file, checking the SHA-256 before the rename.

    Raises:
        DownloadError: The URL could not be read; nothing is left behind.
        CheckpointError: The file arrived but its checksum is wrong; nothing is left behind.
    """
    dest = Path(dest)
    digest = hashlib.sha256()
    with atomic_path(dest) as tmp:
        try:
            with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response, open(tmp, "wb") as out:
                total = int(response.headers.get("Content-Length") or 0) or None
                with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=not progress) as bar:
                    for chunk in iter(lambda: response.read(_CHUNK), b""):
                        out.write(chunk)
                        digest.update(chunk)
                        bar.update(len(chunk))
        except (urllib.error.URLError, OSError, ValueError) as err:
            raise DownloadError(f"could not download {url}: {err}") from err
        if sha256 is not None and digest.hexdigest() != sha256:
            raise CheckpointError(
                f"checksum mismatch for {url}: expected sha256 {sha256}, got {digest.hexdigest()}; the file was discarded"
            )
    return dest


def fetch_checkpoint(
    checkpoint: Checkpoint,
    *,
    download_missing: bool = True,
    progress: bool = True,
    urls: Sequence[str] | None = None,
) -> Path:
    """The cached copy of a published checkpoint, downloaded into `cache_dir()` if it is not there.

    Args:
        checkpoint: The file to find or fetch.
        download_missing: Fetch it when it is not cached.
        progress: Show a progress bar while downloading.
        urls: Download from these instead of the published URLs (mirrors, tests).

    Raises:
        DownloadError: Not cached and could not be fetched; says where to put the file by hand.
        CheckpointError: The cached file has the wrong size, or the download the wrong checksum.
    """
    cached = cache_dir() / checkpoint.filename
    if cached.is_file():
        if checkpoint.size is not None and cached.stat().st_size != checkpoint.size:
            raise CheckpointError(
                f"{cached} has {cached.stat().st_size} bytes, expected {checkpoint.size}: delete it and download again"
            )
        return cached
    hint = f"download {checkpoint.urls[0]} by hand and put it at {cached} (or pass its path)"
    if not download_missing:
        raise DownloadError(f"{checkpoint.filename} is not cached; {hint}")
    failures = []
    for url in urls or checkpoint.urls:
        logger.info("downloading %s to %s", url, cached)
        try:
            return download(url, cached, sha256=checkpoint.sha256, progress=progress)
        except DownloadError as err:
            failures.append(str(err))
    raise DownloadError("; ".join(failures) + f". Offline? {hint}")


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a checkpoint's tensors without running any pickled code.

    Accepts `.safetensors`, a bare state dict, `{"model": ...}` / `{"state_dict": ...}`
    wrappers and `module.` / `model.` key prefixes.

    Raises:
        FileNotFoundError: No such file.
        CheckpointError: Not a readable checkpoint (truncated, text, pickled code, no tensors).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty")
    if path.suffix != ".safetensors":
        with open(path, "rb") as handle:
            magic = handle.read(4)
        if not magic.startswith(_TORCH_MAGIC):
            raise CheckpointError(f"{path} is not a readable checkpoint: neither a torch file (zip or pickle) nor .safetensors")
    try:
        if path.suffix == ".safetensors":
            loaded: object = safetensors.torch.load_file(str(path))
        else:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except safetensors.SafetensorError as err:
        raise CheckpointError(f"{path} is not a readable safetensors file (truncated?): {_first_line(err)}") from err
    except pickle.UnpicklingError as err:
        refused = next((line.strip() for line in str(err).splitlines() if "Unsupported global" in line), _first_line(err))
        raise CheckpointError(
            f"{path} is not a plain tensor checkpoint (refusing to run pickled code it contains): {refused}"
        ) from err
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, KeyError, TypeError) as err:
        raise CheckpointError(
            f"{path} is not a readable checkpoint (truncated or not a torch file?): {_first_line(err)}"
        ) from err
    return _unwrap(loaded, path)


def _unwrap(loaded: object, path: Path) -> dict[str, torch.Tensor]:
    for _ in range(3):
        if isinstance(loaded, Mapping) and not _has_tensors(loaded):
            inner = next((loaded[k] for k in _WRAPPER_KEYS if isinstance(loaded.get(k), Mapping)), None)
            if inner is None:
                break
            loaded = inner
    if not isinstance(loaded, Mapping) or not _has_tensors(loaded):
        raise CheckpointError(f"{path} holds no tensors (found {type(loaded).__name__}); is it a model checkpoint?")
    state = {str(k): v for k, v in loaded.items() if isinstance(v, torch.Tensor) and not _DERIVED_KEYS.search(str(k))}
    for prefix in _PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def _has_tensors(mapping: Mapping) -> bool:
    return any(isinstance(v, torch.Tensor) for v in mapping.values())


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def load_weights(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], *, source: str) -> None:
    """Load a state dict strictly, explaining any mismatch.

    Raises:
        CheckpointError: Missing, unexpected or mis-shaped tensors, each summarised with `source`.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and state_dict[k].shape != v.shape
    ]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
        if items:
            shown = "; ".join(items[:5]) + (f"; ... ({len(items) - 5} more)" if len(items) > 5 else "")
            problems.append(f"{len(items)} {label}: {shown}")
    if problems:
        raise CheckpointError(f"{source} does not fit this model: " + " | ".join(problems))
    model.load_state_dict(dict(state_dict), strict=True)


def save_checkpoint(weights: torch.nn.Module | Mapping[str, torch.Tensor], path: str | os.PathLike[str]) -> Path:
    """Save a model's state dict (or a state dict) atomically: `.safetensors` by suffix, else torch's format.

    The torch file is a flat dict of tensors, the layout of the official checkpoints.
    """
    state = weights.state_dict() if isinstance(weights, torch.nn.Module) else dict(weights)
    not_tensors = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise TypeError(f"a checkpoint holds only tensors; these are not: {', '.join(not_tensors[:5])}")
    path = Path(path)
    with atomic_path(path) as tmp:
        if path.suffix == ".safetensors":
            safetensors.torch.save_file({k: v.detach().cpu().contiguous().clone() for k, v in state.items()}, str(tmp))
        else:
            torch.save({k: v.detach().cpu() for k, v in state.items()}, tmp)
    return path
