"""`GraphBackend`: the graphs of `mobilesam export`, on onnxruntime or OpenVINO, behind the torch `Backend` interface."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..runtime.engines import open_sessions
from ..runtime.sessions import IOU_PREDICTIONS, LOW_RES_MASKS, GraphSessions, onnx_points
from .base import Backend


class GraphBackend(Backend):
    """An exported encoder and decoder on CPU; takes and returns torch tensors like every backend.

    For inference without torch, use `mobilesam.OnnxPredictor` on the same folder.

    Args:
        name: The graph backend's name ("onnx", "onnx-int8", "openvino", "openvino-bf16", "openvino-int8").
        sessions: The loaded graphs (`runtime.open_sessions`).
        folder: The export folder they came from.
    """

    def __init__(self, name: str, sessions: GraphSessions, folder: Path) -> None:
        self.name = name
        self.sessions = sessions
        self.folder = folder

    @classmethod
    def from_export(cls, folder: str | os.PathLike[str], name: str = "onnx", *, threads: int | None = None) -> GraphBackend:
        """Backend `name` over a folder written by `export_onnx`.

        Raises:
            FileNotFoundError: The folder lacks a graph the backend reads (a quantised encoder: export with `--quantize`).
            ValueError: Not a graph backend, or a broken sidecar.
            ImportError: The backend's runtime is not installed.
        """
        return cls(name, open_sessions(Path(folder), name, threads=threads), Path(folder))

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
            torch.from_numpy(np.ascontiguousarray(low_res_masks[:, selected])).to(device),
            torch.from_numpy(np.ascontiguousarray(iou_predictions[:, selected])).to(device),
        )


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(tensor.detach().float().cpu().numpy())
