"""Masks and prompts drawn over the image, as a JPEG."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from ..atomic import atomic_path

if TYPE_CHECKING:
    from ..results import Results


def write_overlay(result: Results, path: str | os.PathLike[str], alpha: float = 0.5, quality: int = 90) -> Path:
    """Write `result.plot(alpha)` (masks and prompts) to `path` as a JPEG, atomically.

    Args:
        result: Masks of one image.
        path: JPEG file to write, whatever its suffix.
        alpha: Mask opacity in [0, 1].
        quality: JPEG quality in [1, 100] (Pillow advises at most 95).

    Returns:
        `path` as a Path.

    Raises:
        ValueError: `alpha` or `quality` is out of range.
    """
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be in [1, 100], got {quality}")
    target = Path(path)
    with atomic_path(target) as tmp:
        Image.fromarray(result.plot(alpha)).save(tmp, format="JPEG", quality=quality)
    return target
