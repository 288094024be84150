"""The interface every backend implements, and the value segment-everything's decoding returns."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from .specs import BackendSpec, backend_spec

# Segment-everything's filter: (B, 3) predicted IoU of the multimask outputs -> (B, 3) bool, True to keep.
CandidateFilter = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Candidates:
    """Segment-everything's decoded batch: every prompt's scores, the masks only of those kept.

    Attributes:
        iou_predictions: (B, 3) predicted IoU of each prompt's multimask outputs.
        kept: (B, 3) bool, what the filter kept.
        low_res_logits: (K, 4H, 4W) one per kept candidate, prompt-major (K = kept.sum()).
    """

    iou_predictions: torch.Tensor
    kept: torch.Tensor
    low_res_logits: torch.Tensor


class Backend(ABC):
    """Runs the encoder and the prompt decoder of one model."""

    name: str
    # Whether segment-everything should decode its batches side by side on
    # one-thread workers: torch's small decoder ops use two cores poorly,
    # while onnxruntime already spreads one batch over every core.
    parallel_batches: bool = False
    # The export folder a graph backend runs (`mobilesam export`, or the export cache).
    folder: Path | None = None

    @property
    def spec(self) -> BackendSpec:
        """What this backend is: runtime, precision, numerics (`BACKEND_SPECS`)."""
        return backend_spec(self.name)

    @abstractmethod
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """(1, 3, S, S) normalised, zero-padded image -> (1, C, H, W) float32 embedding."""

    @abstractmethod
    def decode(
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None,
        mask_input: torch.Tensor | None,
        multimask_output: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Masks for B prompts on one embedding.

        Args:
            image_embeddings: (1, C, H, W) from `embed`.
            point_coords: (B, N, 2) XY, model frame, or None.
            point_labels: (B, N) 1 foreground, 0 background, or None.
            boxes: (B, 4) XYXY, model frame, or None.
            mask_input: (B, 1, 4H, 4W) low-res logits, or None.
            multimask_output: 3 masks per prompt instead of 1.

        Returns:
            low_res_logits (B, M, 4H, 4W) and iou_predictions (B, M), M = 3 or 1, float32.
        """

    def decode_candidates(self, image_embeddings: torch.Tensor, point_coords: torch.Tensor, keep: CandidateFilter) -> Candidates:
        """Segment everything's batch: B single foreground points, multimask, filtered by `keep`.

        Args:
            image_embeddings: (1, C, H, W) from `embed`.
            point_coords: (B, 2) XY, model frame.
            keep: The filter on predicted IoU; masks are returned only for what it keeps.
        """
        labels = torch.ones((len(point_coords), 1), dtype=torch.int, device=point_coords.device)
        low_res_logits, iou_predictions = self.decode(image_embeddings, point_coords[:, None], labels, None, None, True)
        kept = keep(iou_predictions)
        return Candidates(iou_predictions, kept, low_res_logits[kept])


def tensors_stamp(tensors: Iterable[torch.Tensor]) -> tuple[int, ...] | None:
    """Changes whenever one of `tensors` is written in place or replaced by another.

    Version counters count in-place writes (`load_state_dict`, optimiser steps);
    ids catch tensors swapped for others. None where a tensor has no version
    counter (made in inference mode): nothing can be told then.
    """
    tensors = list(tensors)
    if any(t.is_inference() for t in tensors):
        return None
    return tuple(v for t in tensors for v in (id(t), t._version))


def weights_stamp(model: torch.nn.Module) -> tuple[int, ...] | None:
    """`tensors_stamp` of a model's parameters and buffers: changes when its weights are trained or loaded in place."""
    return tensors_stamp([*model.parameters(), *model.buffers()])
