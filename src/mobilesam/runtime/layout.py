"""What a `mobilesam export` folder holds, and finding its graphs (no torch, no onnx needed).

Every folder has a `metadata.json`. Its "format" names the export format
(absent: "onnx", as written before the phone formats), and its "graphs" map
each role ("encoder", "decoder", "decoder_single", "encoder.<variant>") to
the file, its input and output names in order, and, for an encoder, what
its input is (`ENCODER_LAYOUTS`). Folders without "graphs" are ONNX folders
with the fixed names below.
"""

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

# What an encoder graph takes:
# - "normalized": "image" (1, 3, S, S) float32, normalised with the sidecar's mean and std,
#   zero-padded at the bottom right (SAM's own pre-processing, done by the app);
# - "pixels": "image" (1, S, S, 3) float32 RGB in [0, 255], the image resized so its long
#   side is S at the top left (the rest is ignored), and "image_size" (2,) float32, the
#   resized (h, w); the graph normalises and pads, so an app hands over its bitmap.
ENCODER_LAYOUTS = ("normalized", "pixels")
# SAM's ONNX decoder contract (`export.wrappers`); the phone formats' decoders take all
# but `orig_im_size` and return only the low-res outputs, which the app upscales.
SAM_DECODER_INPUTS = ("image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input", "orig_im_size")
SAM_DECODER_OUTPUTS = ("masks", "iou_predictions", "low_res_masks")


@dataclass(frozen=True)
class ExportedGraphs:
    """The graphs of one export folder, and its sidecar.

    Attributes:
        encoder: The encoder graph (of the variant asked for).
        decoder: The four-mask decoder graph.
        metadata: The sidecar.
        format: The export format ("onnx", "executorch", ...).
        encoder_layout: What the encoder takes (`ENCODER_LAYOUTS`).
        encoder_inputs: The encoder's input names, in order.
        decoder_inputs: The decoder's input names, in order (SAM's, or all but `orig_im_size`).
        decoder_outputs: The decoder's output names, in order.
        decoder_single: The single-mask decoder, where the folder has one.
        decoder_batch: The prompts the decoder takes per run where its graph fixes them (1); None: any number.
    """

    encoder: Path
    decoder: Path
    metadata: dict[str, Any]
    format: str = "onnx"
    encoder_layout: str = "normalized"
    encoder_inputs: tuple[str, ...] = ("image",)
    decoder_inputs: tuple[str, ...] = SAM_DECODER_INPUTS
    decoder_outputs: tuple[str, ...] = SAM_DECODER_OUTPUTS
    decoder_single: Path | None = None
    decoder_batch: int | None = None


def check_quantization(quantize: str | None) -> None:
    """Raises ValueError unless `quantize` is None or one of `QUANTIZATIONS`."""
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise ValueError(f"unknown quantisation {quantize!r}; known: {', '.join(QUANTIZATIONS)}")


def graph_entry(
    file: str,
    inputs: tuple[str, ...],
    outputs: tuple[str, ...],
    *,
    layout: str | None = None,
    batch: int | None = None,
) -> dict[str, Any]:
    """One role's record in the sidecar's "graphs" (what exporters write): `layout` for encoders, `batch` for fixed-batch decoders."""
    entry: dict[str, Any] = {"file": file, "inputs": list(inputs), "outputs": list(outputs)}
    if layout is not None:
        entry["layout"] = layout
    if batch is not None:
        entry["batch"] = batch
    return entry


def read_metadata(folder: str | Path) -> dict[str, Any]:
    """The sidecar of export `folder`.

    Raises:
        FileNotFoundError: Not an export folder.
        ValueError: The sidecar is not a JSON object.
    """
    sidecar = Path(folder) / METADATA_FILE
    if not sidecar.is_file():
        raise FileNotFoundError(f"{folder} is not a `mobilesam export` folder (no {METADATA_FILE})")
    try:
        metadata = json.loads(sidecar.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{sidecar} is not valid JSON ({err}); export again with `mobilesam export`") from None
    if not isinstance(metadata, dict):
        raise ValueError(f"{sidecar} is not a JSON object; export again with `mobilesam export`")
    return metadata


def find_graphs(folder: str | Path, quantize: str | None = None) -> ExportedGraphs:
    """The encoder (the variant `quantize` names, or fp32) and decoders of a `mobilesam export` folder.

    Raises:
        FileNotFoundError: Not an export folder, or it lacks a graph (for a quantised one: export with `--quantize`).
        ValueError: Unknown `quantize`, or an unreadable sidecar.
    """
    folder = Path(folder)
    metadata = read_metadata(folder)
    if "graphs" in metadata:
        return _described_graphs(folder, metadata, quantize)
    check_quantization(quantize)
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


def _described_graphs(folder: Path, metadata: dict[str, Any], variant: str | None) -> ExportedGraphs:
    """The graphs a sidecar's "graphs" section names."""
    try:
        graphs = metadata["graphs"]
        role = "encoder" if variant is None else f"encoder.{variant}"
        if role not in graphs:
            variants = sorted(name.split(".", 1)[1] for name in graphs if name.startswith("encoder."))
            raise ValueError(
                f"{folder} has no {variant!r} encoder; its variants: {', '.join(variants) or 'none'} "
                "(export with `--quantize` to add one)"
            )
        encoder, decoder = graphs[role], graphs["decoder"]
        layout = encoder.get("layout", "normalized")
        if layout not in ENCODER_LAYOUTS:
            raise ValueError(f"encoder layout {layout!r}; known: {', '.join(ENCODER_LAYOUTS)}")
        single = graphs.get("decoder_single")
        found = ExportedGraphs(
            encoder=folder / encoder["file"],
            decoder=folder / decoder["file"],
            metadata=metadata,
            format=str(metadata.get("format", "onnx")),
            encoder_layout=layout,
            encoder_inputs=tuple(encoder["inputs"]),
            decoder_inputs=tuple(decoder["inputs"]),
            decoder_outputs=tuple(decoder["outputs"]),
            decoder_single=None if single is None else folder / single["file"],
            decoder_batch=decoder.get("batch"),
        )
    except (KeyError, TypeError, AttributeError) as err:
        raise ValueError(
            f"{folder / METADATA_FILE}: its graphs section is incomplete ({err!r}); export again with `mobilesam export`"
        ) from None
    for path in (found.encoder, found.decoder, found.decoder_single):
        if path is not None and not path.exists():
            raise FileNotFoundError(f"no graph at {path}; export again with `mobilesam export`")
    return found
