"""The `metadata.json` beside every export: the model, its pre-processing, the graphs, what the app must do."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..atomic import write_text_atomic
from ..modeling import Sam
from ..runtime.layout import METADATA_FILE
from ..weights import sha256_file
from .mobile import APP_CONTRACT


def base_metadata(model: Sam, model_name: str, weights: str | Path | None) -> dict[str, Any]:
    """What every sidecar says: the model, its weights' file and hash, and the pre- and post-processing constants."""
    return {
        "model": model_name,
        "weights": None if weights is None else {"file": Path(weights).name, "sha256": sha256_file(weights)},
        "image_size": model.img_size,
        # What a client does before the encoder and after the decoder, so a
        # predictor needs nothing but the folder.
        "preprocessing": {
            "pixel_mean": model.pixel_mean.flatten().tolist(),
            "pixel_std": model.pixel_std.flatten().tolist(),
            "image_format": model.image_format,
            "mask_threshold": model.mask_threshold,
        },
        "torch": torch.__version__,
    }


def write_phone_sidecar(
    out: Path,
    model: Sam,
    *,
    export_format: str,
    model_name: str,
    weights: str | Path | None,
    graphs: dict[str, dict[str, Any]],
    **facts: Any,
) -> Path:
    """Write the sidecar of a phone-format folder (`export.mobile`'s graphs), with each file's SHA-256.

    Args:
        out: The export folder.
        export_format: Its format ("executorch", "tflite", ...).
        graphs: Role -> `runtime.layout.graph_entry`, as `export.mobile.mobile_graphs` makes them.
        facts: More keys to record (converter versions, quantisation recipe).
    """
    metadata = base_metadata(model, model_name, weights)
    for entry in graphs.values():
        path = out / entry["file"]
        if path.is_file():
            entry["sha256"] = sha256_file(path)
    metadata.update(format=export_format, graphs=graphs, app=APP_CONTRACT, **facts)
    return write_text_atomic(out / METADATA_FILE, json.dumps(metadata, indent=2) + "\n")
