"""Training checkpoints: everything a run needs to continue exactly where it stopped.

A training checkpoint holds the trained module, optimiser, scheduler and
gradient scaler states, the step, the data position and every RNG state. It
is written through a temporary file and a rename, and read back with
`torch.load(weights_only=True)`: it contains only tensors, numbers, strings,
lists and dicts, so reading it runs no pickled code.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import atomic_path
from ..errors import CheckpointError


def rng_state() -> dict[str, Any]:
    """The states of Python's, NumPy's and torch's (CPU and CUDA) generators, as plain data."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(internal), gauss],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the generators saved by `rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_training_state(state: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write a training checkpoint atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def load_training_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a training checkpoint without running pickled code.

    Raises:
        FileNotFoundError: No checkpoint (nothing to resume).
        CheckpointError: The file is not a training checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"nothing to resume: {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a damaged file; all mean the same here
        raise CheckpointError(f"{path} is not a readable training checkpoint: {str(err).splitlines()[0]}") from err
    if not isinstance(state, dict) or "step" not in state or "model" not in state:
        raise CheckpointError(f"{path} is not a training checkpoint (no 'step' and 'model')")
    return state
