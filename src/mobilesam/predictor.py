"""`SamPredictor`: embed an image once, then predict masks for many prompts.

A drop-in for `segment_anything.SamPredictor` / `mobile_sam.SamPredictor`:
same methods, arguments, shapes and return types, plus input checks that
raise `ValueError` instead of failing deep inside the model.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .backends import Backend, TorchBackend
from .embedding import ImageEmbedding
from .image_state import CurrentImage
from .io.images import to_rgb_uint8
from .modeling import Sam
from .prompts import predictor_prompt
from .transforms import ResizeLongestSide

class SamPredictor(CurrentImage[torch.Tensor]):
    """Computes an image embedding once and predicts masks from prompts on it.

    Args:
        sam_model: The model; it stays in whatever mode and on whatever device it is.
        backend: What runs the encoder and decoder (`mobilesam.backends`);
            default the model's own modules in eager torch.
    """

    def __init__(self, sam_model: Sam, backend: Backend | None = None) -> None:
        self.model = sam_model
        self.backend = TorchBackend(sam_model) if backend is None else backend
        self.transform = ResizeLongestSide(sam_model.image_encoder.img_size)
        super().__init__()

    @property
    def device(self) -> torch.device:
        return self.model.device

    def embed(self, image: np.ndarray, image_format: str = "RGB") -> ImageEmbedding[torch.Tensor]:
        """The embedding of an image, leaving the current image as it is (`set_image` makes it current).

        Args:
            image: (H, W, 3) uint8 image; grayscale, RGBA, 16-bit and float
                images are converted (see `mobilesam.io.to_rgb_uint8`).
            image_format: "RGB" or "BGR" (what `cv2.imread` returns).
        """
        rgb = to_rgb_uint8(image, image_format)
        if self.model.image_format == "BGR":
            rgb = rgb[..., ::-1]
        resized = self.transform.apply_image(rgb)
        image_torch = torch.as_tensor(resized, device=self.device).permute(2, 0, 1).contiguous()[None]
        return self._embed_resized(image_torch, rgb.shape[:2])

    def set_torch_image(self, transformed_image: torch.Tensor, original_image_size: tuple[int, ...]) -> None:
        """Compute the embedding of an image already resized with `self.transform`.

        Args:
            transformed_image: (1, 3, H, W) with values in [0, 255] and the long side equal to the model input size.
            original_image_size: (H, W) of the image before resizing.
        """
        self.reset_image()  # a failing encoder leaves no stale image behind
        self.set_embedding(self._embed_resized(transformed_image, original_image_size))

    @torch.no_grad()
    def _embed_resized(self, transformed_image: torch.Tensor, original_image_size: tuple[int, ...]) -> ImageEmbedding[torch.Tensor]:
        size = self.model.image_encoder.img_size
        shape = tuple(transformed_image.shape)
        if len(shape) != 4 or shape[0] != 1 or shape[1] != 3 or max(shape[2:]) != size:
            raise ValueError(f"set_torch_image expects a (1, 3, H, W) image whose long side is {size}, got {shape}")
        features = self.backend.embed(self.model.preprocess(transformed_image))
        return ImageEmbedding(features, (original_image_size[0], original_image_size[1]), (shape[2], shape[3]))

    def predict(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Predict masks for one object on the current image.

        Args:
            point_coords: (N, 2) XY pixels in the original image.
            point_labels: (N,) 1 foreground, 0 background.
            box: (4,) XYXY pixels in the original image.
            mask_input: (1, 256, 256) low-res logits from a previous call.
            multimask_output: Return 3 masks (best for a single ambiguous click) instead of 1.
            return_logits: Return mask logits instead of booleans.

        Returns:
            masks: (C, H, W) bool (or float logits) at the original size, C = 3 or 1.
            iou_predictions: (C,) predicted mask quality.
            low_res_logits: (C, 256, 256), to feed back as `mask_input`.
        """
        embedding = self._require_image()
        prompt = predictor_prompt(
            self.transform,
            embedding.original_size,
            self.model.prompt_encoder.mask_input_size,
            point_coords,
            point_labels,
            box,
            mask_input,
        )
        coords_torch, labels_torch, box_torch, mask_torch = (
            None if value is None else torch.as_tensor(value, dtype=dtype, device=self.device)
            for value, dtype in (
                (prompt.point_coords, torch.float),
                (prompt.point_labels, torch.int),
                (prompt.boxes, torch.float),
                (prompt.mask_input, torch.float),
            )
        )
        masks, iou_predictions, low_res_logits = self.predict_torch(
            coords_torch, labels_torch, box_torch, mask_torch, multimask_output, return_logits=return_logits
        )
        return _to_numpy(masks[0]), _to_numpy(iou_predictions[0]), _to_numpy(low_res_logits[0])

    @torch.no_grad()
    def predict_torch(
        self,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Predict masks for B objects at once, prompts already in the model frame.

        Transform coordinates with `self.transform.apply_coords_torch` /
        `apply_boxes_torch` first.

        Args:
            point_coords: (B, N, 2) XY, model frame.
            point_labels: (B, N) 1 foreground, 0 background.
            boxes: (B, 4) XYXY, model frame.
            mask_input: (B, 1, 256, 256) low-res logits.
            multimask_output: 3 masks per object instead of 1.
            return_logits: Logits instead of booleans.

        Returns:
            masks (B, C, H, W) at the original size, iou_predictions (B, C),
            low_res_logits (B, C, 256, 256).
        """
        embedding = self._require_image()
        if (point_coords is None) != (point_labels is None):
            raise ValueError("point_coords and point_labels must be given together")
        if point_coords is not None and point_coords.shape[:2] != point_labels.shape[:2]:
            raise ValueError(
                f"point_coords (B, N, 2) and point_labels (B, N) disagree: {tuple(point_coords.shape)} vs {tuple(point_labels.shape)}"
            )
        low_res_logits, iou_predictions = self.backend.decode(
            embedding.features, point_coords, point_labels, boxes, mask_input, multimask_output
        )
        masks = self.model.postprocess_masks(low_res_logits, embedding.input_size, embedding.original_size)
        if not return_logits:
            masks = masks > self.model.mask_threshold
        return masks, iou_predictions, low_res_logits


def _to_numpy(tensor: torch.Tensor) -> Any:
    if tensor.is_floating_point():
        tensor = tensor.float()
    return tensor.detach().cpu().numpy()
