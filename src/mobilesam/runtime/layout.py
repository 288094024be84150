"""What a `mobilesam export` folder holds, and finding its graphs (no torch, no onnx needed)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENCODER_FILE = "encoder.onnx"
DECODER_FILE = "decoder.onnx"
METADATA_FILE = "metadata.json"
# Quantised encoders beside the fp32 graph: onnxruntime's dynamic int8 graph,
# and an OpenVINO IR (.xml + .bin) whose int8 ranges NNCF calibrated on images.
QUANTIZED_ENCODER_FILES = {"int8": "encoder.int8.onnx", "int8-static": "encoder.int8-static.xml"}
QUANTIZATIONS = tuple(QUANTIZED_ENCODER_FILES)


@dataclass(frozen=True)
class ExportedGraphs:
    """The graphs of one export folder, and its sidecar."""

    encoder: Path
    decoder: Path
    metadata: dict[str, Any]


def check_quantization(quantize: str | None) -> None:
    """Raises ValueError unless `quantize` is None or one of `QUANTIZATIONS`."""
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise ValueError(f"unknown quantisation {quantize!r}; known: {', '.join(QUANTIZATIONS)}")


def find_graphs(folder: str | Path, quantize: str | None = None) -> ExportedGraphs:
    """The encoder (quantised as `quantize` says, see `QUANTIZATIONS`) and decoder of a `mobilesam export` folder.

    Raises:
        FileNotFoundError: Not an export folder, or it lacks a graph (for a quantised one: export with `--quantize`).
        ValueError: Unknown `quantize`, or an unreadable sidecar.
    """
    check_quantization(quantize)
    folder = Path(folder)
    sidecar = folder / METADATA_FILE
    if not sidecar.is_file():
        raise FileNotFoundError(f"{folder} is not a `mobilesam export` folder (no {METADATA_FILE})")
    try:
        metadata = json.loads(sidecar.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{sidecar} is not valid JSON ({err}); export again with `mobilesam export`") from None
    if quantize is None:
        encoder = folder / ENCODER_FILE
    else:
        encoder = folder / QUANTIZED_ENCODER_FILES[quantize]
        if not encoder.is_file():
            raise FileNotFoundError(f"no {encoder.name} in {folder}: export with `--quantize {quantize}`")
    for path in (encoder, folder / DECODER_FILE):
        if not path.is_file():
            raise FileNotFoundError(f"no ONNX graph at {path}; write one with `mobilesam export`")
    return ExportedGraphs(encoder, folder / DECODER_FILE, metadata)
