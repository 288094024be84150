"""What a `mobilesam export` folder holds, and finding its graphs (no torch, no onnx needed)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .quantize import QUANTIZATIONS, quantized_name

ENCODER_FILE = "encoder.onnx"
DECODER_FILE = "decoder.onnx"
METADATA_FILE = "metadata.json"


@dataclass(frozen=True)
class ExportedGraphs:
    """The graphs of one export folder, and its sidecar."""

    encoder: Path
    decoder: Path
    metadata: dict[str, Any]
    name: str  # "onnx", or "onnx-int8" with the quantised encoder


def find_graphs(folder: str | Path, quantize: str | None = None) -> ExportedGraphs:
    """The encoder (int8 if `quantize` is "int8") and decoder graphs of a folder written by `export_onnx`.

    Raises:
        FileNotFoundError: Not an export folder, or it lacks a graph (for int8: export with `--quantize int8`).
        ValueError: Unknown `quantize`, or an unreadable sidecar.
    """
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise ValueError(f"unknown quantisation {quantize!r}; known: {', '.join(QUANTIZATIONS)}")
    folder = Path(folder)
    sidecar = folder / METADATA_FILE
    if not sidecar.is_file():
        raise FileNotFoundError(f"{folder} is not a `mobilesam export` folder (no {METADATA_FILE})")
    try:
        metadata = json.loads(sidecar.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{sidecar} is not valid JSON ({err}); export again with `mobilesam export`") from None
    encoder = folder / ENCODER_FILE
    if quantize is not None:
        encoder = quantized_name(encoder, quantize)
        if not encoder.is_file():
            raise FileNotFoundError(f"no {encoder.name} in {folder}: export with `--quantize {quantize}`")
    for path in (encoder, folder / DECODER_FILE):
        if not path.is_file():
            raise FileNotFoundError(f"no ONNX graph at {path}; write one with `mobilesam export`")
    name = "onnx" if quantize is None else f"onnx-{quantize}"
    return ExportedGraphs(encoder, folder / DECODER_FILE, metadata, name)
