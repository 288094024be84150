"""`OnnxBackend`: the graphs of `mobilesam export` behind the torch `Backend` interface."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..export.layout import ExportedGraphs, find_graphs
from ..export.sessions import IOU_PREDICTIONS, LOW_RES_MASKS, OnnxSessions, onnx_points
from .base import Backend


class OnnxBackend(Backend):
    """onnxruntime on CPU; takes and returns torch tensors like every backend.

    For inference without torch, use `mobilesam.OnnxPredictor` on the same folder.

    Args:
        graphs: From `mobilesam.export.layout.find_graphs`.
        threads: Intra-op threads; None lets onnxruntime choose (one per core).

    Raises:
        ImportError: onnxruntime is not installed.
    """

    def __init__(self, graphs: ExportedGraphs, *, threads: int | None = None) -> None:
        self.name = graphs.name
        self.sessions = OnnxSessions(graphs, threads=threads)

    @classmethod
    def from_export(cls, folder: Path, *, quantize: str | None = None, threads: int | None = None) -> OnnxBackend:
        """The backend over a folder written by `export_onnx`, with the int8 encoder if `quantize` is "int8".

        Raises:
            FileNotFoundError: The folder lacks a graph (for int8: export with `--quantize int8`).
            ValueError: Unknown `quantize`, or a broken sidecar.
        """
        return cls(find_graphs(folder, quantize), threads=threads)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.sessions.embed(_numpy(images))).to(images.device)

    def decode(
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None,
        mask_input: torch.Tensor | None,
        multimask_output: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        coords, labels = onnx_points(
            None if point_coords is None else _numpy(point_coords),
            None if point_labels is None else _numpy(point_labels),
            None if boxes is None else _numpy(boxes),
        )
        # The predictor upscales the low-res logits itself, so the graph's
        # `masks` output is made at the low-res size, where it costs least.
        iou_predictions, low_res_masks = self.sessions.decode(
            _numpy(image_embeddings),
            coords,
            labels,
            None if mask_input is None else _numpy(mask_input),
            self.sessions.mask_input_size,
            outputs=(IOU_PREDICTIONS, LOW_RES_MASKS),
        )
        selected = slice(1, None) if multimask_output else slice(0, 1)
        device = image_embeddings.device
        return (
            torch.from_numpy(low_res_masks[:, selected]).to(device),
            torch.from_numpy(iou_predictions[:, selected]).to(device),
        )


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(tensor.detach().float().cpu().numpy())
