"""Running a fresh export once in its own runtime, so a broken file fails at export time, not in the app."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..runtime.runtimes import open_export
from ..runtime.sessions import onnx_points


def run_once(folder: str | Path, *, variant: str | None = None) -> None:
    """Embed a grey image and decode one click with `folder`'s graphs in the first runtime here that runs them.

    Raises:
        RuntimeError: A graph gives non-finite outputs.
        ImportError: The runtime is not installed.
    """
    sessions = open_export(folder, variant=variant)
    side = sessions.img_size
    resized = np.full((side * 3 // 4, side, 3), 128, np.uint8)
    preprocessing = sessions.metadata["preprocessing"]
    embedding = sessions.embed_resized(resized, preprocessing["pixel_mean"], preprocessing["pixel_std"])
    coords, labels = onnx_points(np.array([[[side / 2, side / 3]]]), np.array([[1]]), None)
    outputs = [
        embedding,
        *sessions.decode(embedding, coords, labels, None, (side * 3 // 4, side), ("iou_predictions", "low_res_masks")),
    ]
    if not all(np.isfinite(output).all() for output in outputs):
        raise RuntimeError(f"the export in {folder} gives non-finite outputs in {type(sessions).__name__}")
