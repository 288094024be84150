"""The exported encoder and decoder behind one interface on numpy arrays, whatever runtime runs them."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..transforms import get_preprocess_shape, normalize_and_pad, pad_pixels, upscale_logits
from .layout import ExportedGraphs

# Decoder outputs, in the ONNX graph's order.
MASKS, IOU_PREDICTIONS, LOW_RES_MASKS = "masks", "iou_predictions", "low_res_masks"


class GraphSessions(ABC):
    """The encoder and decoder graphs of one export, loaded in one runtime.

    Subclasses run a graph on named float32 inputs; feeding the encoder what its
    layout asks for, and the decoder SAM's ONNX inputs (padding point, empty mask,
    sizes), happens here, once, for every runtime.

    Args:
        graphs: From `find_graphs`.

    Attributes:
        graphs: What the folder holds: files, input and output names, the encoder's layout.
        metadata: The export's sidecar (pre-processing constants, model, checksums).
        img_size: The square side S the encoder takes.
        mask_input_size: (H, W) of the decoder's `mask_input` (4x the embedding's).
    """

    def __init__(self, graphs: ExportedGraphs) -> None:
        self.graphs = graphs
        self.metadata: dict[str, Any] = graphs.metadata
        self.img_size = int(self.metadata.get("image_size", 1024))
        side = 4 * (self.img_size // 16)
        self.mask_input_size: tuple[int, int] = (side, side)

    @abstractmethod
    def _run_encoder(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """The encoder's (1, C, S/16, S/16) float32 output for `feeds` (input name -> float32 array, in graph order)."""

    @abstractmethod
    def _run_decoder(self, feeds: dict[str, np.ndarray], outputs: tuple[str, ...]) -> list[np.ndarray]:
        """The decoder graph's `outputs`, in that order, for `feeds` (input name -> float32 array, in graph order)."""

    def embed(self, image: np.ndarray) -> np.ndarray:
        """(1, 3, S, S) normalised, padded float32 image -> (1, C, S/16, S/16) embedding.

        Raises:
            ValueError: The encoder takes pixels (use `embed_resized`).
        """
        if self.graphs.encoder_layout != "normalized":
            raise ValueError(f"this {self.graphs.format} encoder takes pixels, not a normalised image; use embed_resized")
        return self._run_encoder({"image": np.ascontiguousarray(image, np.float32)})

    def embed_resized(self, resized: np.ndarray, pixel_mean: Sequence[float], pixel_std: Sequence[float]) -> np.ndarray:
        """(h, w, 3) uint8 image, long side already S, in the model's channel order -> (1, C, S/16, S/16) embedding."""
        if self.graphs.encoder_layout == "normalized":
            return self.embed(normalize_and_pad(resized, pixel_mean, pixel_std, self.img_size))
        image, image_size = pad_pixels(resized, self.img_size)
        return self._run_encoder({"image": image, "image_size": image_size})

    def decode(
        self,
        image_embeddings: np.ndarray,
        point_coords: np.ndarray,
        point_labels: np.ndarray,
        mask_input: np.ndarray | None,
        orig_im_size: tuple[int, int],
        outputs: tuple[str, ...] = (MASKS, IOU_PREDICTIONS, LOW_RES_MASKS),
    ) -> list[np.ndarray]:
        """Run the decoder graph on prompts already in SAM's ONNX form (see `onnx_points`).

        Args:
            image_embeddings: (1, C, H, W) from `embed`.
            point_coords: (B, N, 2) XY, model frame.
            point_labels: (B, N) labels 1, 0, 2, 3 or -1.
            mask_input: (B, 1, 256, 256) low-res logits, or None.
            orig_im_size: (H, W) the `masks` output is upscaled to (here, where the graph returns only low-res logits).
            outputs: Which outputs to return, in this order.

        Returns:
            The requested outputs; each has all four mask tokens (0: single-mask output, 1-3: multimask).
        """
        batch = point_coords.shape[0]
        if mask_input is None:
            masks, has_mask = np.zeros((batch, 1, *self.mask_input_size), np.float32), 0.0
        else:
            masks, has_mask = np.broadcast_to(mask_input, (batch, 1, *self.mask_input_size)), 1.0
        sam_feeds = {
            "image_embeddings": np.ascontiguousarray(image_embeddings, np.float32),
            "point_coords": np.ascontiguousarray(point_coords, np.float32),
            "point_labels": np.ascontiguousarray(point_labels, np.float32),
            "mask_input": np.ascontiguousarray(masks, np.float32),
            "has_mask_input": np.array([has_mask], np.float32),
            "orig_im_size": np.array(orig_im_size, np.float32),
        }
        feeds = {name: sam_feeds[name] for name in self.graphs.decoder_inputs}
        upscale_here = MASKS in outputs and MASKS not in self.graphs.decoder_outputs
        asked = tuple(dict.fromkeys(LOW_RES_MASKS if upscale_here and name == MASKS else name for name in outputs))
        if self.graphs.decoder_batch is None or batch == self.graphs.decoder_batch:
            found = dict(zip(asked, self._run_decoder(feeds, asked), strict=True))
        else:
            found = self._decode_rows(feeds, asked, batch)
        if upscale_here:
            input_size = get_preprocess_shape(orig_im_size[0], orig_im_size[1], self.img_size)
            found[MASKS] = upscale_logits(found[LOW_RES_MASKS], input_size, orig_im_size, self.img_size)
        return [found[name] for name in outputs]

    def _decode_rows(self, feeds: dict[str, np.ndarray], outputs: tuple[str, ...], batch: int) -> dict[str, np.ndarray]:
        """A batch through a decoder graph that takes one prompt per run: a run per row."""
        per_prompt = {"point_coords", "point_labels", "mask_input"}
        runs = [
            self._run_decoder(
                {name: value[row : row + 1] if name in per_prompt else value for name, value in feeds.items()}, outputs
            )
            for row in range(batch)
        ]
        return {name: np.concatenate([run[index] for run in runs]) for index, name in enumerate(outputs)}


def onnx_points(
    point_coords: np.ndarray | None, point_labels: np.ndarray | None, boxes: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Points and boxes in SAM's ONNX form: (B, N, 2) coords and (B, N) float32 labels.

    Boxes become two corner points labelled 2 and 3; without a box, one
    padding point (label -1) goes last, as `SamPredictor` adds it.

    Args:
        point_coords: (B, N, 2) XY, model frame, or None.
        point_labels: (B, N), or None.
        boxes: (B, 4) XYXY, model frame, or None.

    Raises:
        ValueError: Neither points nor a box (the graph needs one).
    """
    coords, labels = [], []
    if point_coords is not None:
        coords.append(np.asarray(point_coords, np.float32))
        labels.append(np.asarray(point_labels, np.float32))
    if boxes is not None:
        corners = np.asarray(boxes, np.float32).reshape(-1, 2, 2)
        coords.append(corners)
        labels.append(np.broadcast_to(np.array([2.0, 3.0], np.float32), corners.shape[:2]))
    elif coords:
        batch = coords[0].shape[0]
        coords.append(np.zeros((batch, 1, 2), np.float32))
        labels.append(-np.ones((batch, 1), np.float32))
    if not coords:
        raise ValueError("the ONNX decoder needs a point or a box prompt; a mask alone is not supported")
    return np.concatenate(coords, axis=1), np.ascontiguousarray(np.concatenate(labels, axis=1))
