"""`OnnxBackend`: the encoder and decoder graphs of `mobilesam export`, run by onnxruntime."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..backends import Backend
from .exporter import DECODER_FILE, ENCODER_FILE, METADATA_FILE
from .quantize import QUANTIZATIONS, quantized_name


class OnnxBackend(Backend):
    """onnxruntime on CPU; takes and returns torch tensors like every backend.

    Args:
        encoder_path: Encoder graph (fp32 or int8).
        decoder_path: Decoder graph.
        threads: Intra-op threads; None lets onnxruntime choose (one per core).
        name: Shown in benchmarks.

    Raises:
        ImportError: onnxruntime is not installed.
        FileNotFoundError: A graph is missing.
    """

    def __init__(self, encoder_path: Path, decoder_path: Path, *, threads: int | None = None, name: str = "onnx") -> None:
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise ImportError(f"the onnx backend needs onnxruntime: pip install 'mobilesam[onnx]' ({err})") from None
        for path in (encoder_path, decoder_path):
            if not Path(path).is_file():
                raise FileNotFoundError(f"no ONNX graph at {path}; write one with `mobilesam export`")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads is not None:
            options.intra_op_num_threads = threads
        providers = ["CPUExecutionProvider"]
        self.name = name
        self.encoder = ort.InferenceSession(str(encoder_path), options, providers=providers)
        self.decoder = ort.InferenceSession(str(decoder_path), options, providers=providers)
        self._mask_size = tuple(self.decoder.get_inputs()[3].shape[2:])

    @classmethod
    def from_export(cls, folder: Path, *, quantize: str | None = None, threads: int | None = None) -> OnnxBackend:
        """The backend over a folder written by `export_onnx`, with the int8 encoder if `quantize` is "int8".

        Raises:
            FileNotFoundError: The folder lacks a graph (for int8: export with `--quantize int8`).
            ValueError: Unknown `quantize`.
        """
        if quantize is not None and quantize not in QUANTIZATIONS:
            raise ValueError(f"unknown quantisation {quantize!r}; known: {', '.join(QUANTIZATIONS)}")
        folder = Path(folder)
        if not (folder / METADATA_FILE).is_file():
            raise FileNotFoundError(f"{folder} is not a `mobilesam export` folder (no {METADATA_FILE})")
        json.loads((folder / METADATA_FILE).read_text())  # a truncated sidecar means a broken export
        encoder = folder / ENCODER_FILE
        if quantize is not None:
            encoder = quantized_name(encoder, quantize)
            if not encoder.is_file():
                raise FileNotFoundError(f"no {encoder.name} in {folder}: export with `--quantize {quantize}`")
        name = "onnx" if quantize is None else f"onnx-{quantize}"
        return cls(encoder, folder / DECODER_FILE, threads=threads, name=name)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        (embedding,) = self.encoder.run(None, {"image": _numpy(images)})
        return torch.from_numpy(embedding).to(images.device)

    def decode(
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None,
        mask_input: torch.Tensor | None,
        multimask_output: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        coords, labels = _as_points(point_coords, point_labels, boxes)
        if coords is None:
            raise ValueError("the onnx backend needs a point or a box prompt; a mask alone is not supported")
        batch = coords.shape[0]
        if mask_input is None:
            masks, has_mask = np.zeros((batch, 1, *self._mask_size), np.float32), 0.0
        else:
            masks, has_mask = _numpy(mask_input.expand(batch, -1, -1, -1)), 1.0
        feeds = {
            "image_embeddings": _numpy(image_embeddings),
            "point_coords": coords,
            "point_labels": labels,
            "mask_input": masks,
            "has_mask_input": np.array([has_mask], np.float32),
            # Unused by this backend (the predictor upscales the low-res logits itself), but an input of the graph.
            "orig_im_size": np.array(self._mask_size, np.float32),
        }
        iou_predictions, low_res_masks = self.decoder.run(["iou_predictions", "low_res_masks"], feeds)
        selected = slice(1, None) if multimask_output else slice(0, 1)
        device = image_embeddings.device
        return (
            torch.from_numpy(low_res_masks[:, selected]).to(device),
            torch.from_numpy(iou_predictions[:, selected]).to(device),
        )


def _as_points(
    point_coords: torch.Tensor | None, point_labels: torch.Tensor | None, boxes: torch.Tensor | None
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Points and boxes in SAM's ONNX form: boxes become corners labelled 2/3; without a box, a padding point."""
    coords, labels = [], []
    if point_coords is not None:
        coords.append(_numpy(point_coords))
        labels.append(_numpy(point_labels))
    if boxes is not None:
        corners = _numpy(boxes).reshape(-1, 2, 2)
        coords.append(corners)
        labels.append(np.broadcast_to(np.array([2.0, 3.0], np.float32), corners.shape[:2]))
    elif coords:
        batch = coords[0].shape[0]
        coords.append(np.zeros((batch, 1, 2), np.float32))
        labels.append(-np.ones((batch, 1), np.float32))
    if not coords:
        return None, None
    return np.concatenate(coords, axis=1), np.ascontiguousarray(np.concatenate(labels, axis=1))


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(tensor.detach().float().cpu().numpy())
