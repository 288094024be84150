"""Checks every export runs before it is kept: a captured graph against eager torch, a fresh folder in its own runtime."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..runtime.runtimes import open_export
from ..runtime.sessions import onnx_points

# A captured graph that drifts further than this from eager torch (relative to the output's scale) took a wrong branch.
TRACE_TOLERANCE = 1e-4


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


def check_against_eager(reference: nn.Module, candidate: Callable[..., Any], checks: Sequence[tuple[torch.Tensor, ...]]) -> None:
    """Check that a captured graph (`candidate`) gives `reference`'s outputs on each of `checks`.

    Raises:
        RuntimeError: An output's shape differs, or a value by more than `TRACE_TOLERANCE` of the output's scale.
    """
    with torch.inference_mode():
        for inputs in checks:
            expected, captured = _as_tuple(reference(*inputs)), _as_tuple(candidate(*inputs))
            for want, got in zip(expected, captured, strict=True):
                scale = float(want.abs().max()) or 1.0
                if want.shape != got.shape or float((want - got).abs().max()) > TRACE_TOLERANCE * scale:
                    shapes = [tuple(x.shape) for x in inputs]
                    raise RuntimeError(f"the captured {type(reference).__name__} departs from eager torch on inputs {shapes}")


def _as_tuple(outputs: torch.Tensor | Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    return (outputs,) if isinstance(outputs, torch.Tensor) else tuple(outputs)
