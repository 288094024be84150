"""`GraphBackend`: the graphs of `mobilesam export`, on onnxruntime or OpenVINO, behind the torch `Backend` interface."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..modeling import Sam
from ..runtime.engines import open_sessions
from ..runtime.sessions import IOU_PREDICTIONS, LOW_RES_MASKS, GraphSessions, onnx_points
from .base import Backend, CandidateFilter, Candidates
from .torch import FastTorchDecoding


class GraphBackend(Backend):
    """An exported encoder on CPU, and the decoder its spec names; takes and returns torch tensors like every backend.

    The onnx backends run the decoder graph too; the OpenVINO ones decode prompts in
    torch (`FastTorchDecoding`, `BackendSpec.decoder_runtime`), which is about twice
    as fast per click. For inference without torch, use `mobilesam.OnnxPredictor`.

    Args:
        name: The graph backend's name ("onnx", "onnx-int8", "openvino", "openvino-bf16", "openvino-int8").
        sessions: The loaded graphs (`runtime.open_sessions`).
        folder: The export folder they came from.
        model: The model the graphs were exported from (its decoder, where the spec decodes in torch).
    """

    def __init__(self, name: str, sessions: GraphSessions, folder: Path, model: Sam) -> None:
        self.name = name
        self.sessions = sessions
        self.folder = folder
        self._torch_decoding = (
            FastTorchDecoding(model, bf16_candidates=self.spec.precision != "fp32")
            if self.spec.decoder_runtime == "torch"
            else None
        )
        # Torch's small decoder ops use two cores poorly, one-thread batches side by side well.
        self.parallel_batches = self._torch_decoding is not None

    @classmethod
    def from_export(cls, folder: str | os.PathLike[str], name: str, model: Sam, *, threads: int | None = None) -> GraphBackend:
        """Backend `name` for `model` over a folder written by `export_onnx` from it.

        Raises:
            FileNotFoundError: The folder lacks a graph the backend reads (a quantised encoder: export with `--quantize`).
            ValueError: Not a graph backend, or a broken sidecar.
            ImportError: The backend's runtime is not installed.
        """
        return cls(name, open_sessions(Path(folder), name, threads=threads), Path(folder), model)

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
        if self._torch_decoding is not None:
            return self._torch_decoding.decode(image_embeddings, point_coords, point_labels, boxes, mask_input, multimask_output)
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

    def decode_candidates(self, image_embeddings: torch.Tensor, point_coords: torch.Tensor, keep: CandidateFilter) -> Candidates:
        if self._torch_decoding is not None:
            return self._torch_decoding.decode_candidates(image_embeddings, point_coords, keep)
        return super().decode_candidates(image_embeddings, point_coords, keep)


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(tensor.detach().float().cpu().numpy())
