"""`Sam`: image encoder + prompt encoder + mask decoder, with the model's own input and output scaling."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder


class Sam(nn.Module):
    """Segment Anything: predicts object masks from an image and prompts.

    Args:
        image_encoder: (B, 3, S, S) normalised, padded image -> (B, C, S/16, S/16);
            must expose `img_size` (S).
        prompt_encoder: Encodes points, boxes and masks.
        mask_decoder: Predicts masks from both embeddings.
        pixel_mean: Per-channel RGB mean in [0, 255].
        pixel_std: Per-channel RGB standard deviation in [0, 255].

    Attributes:
        config: The `mobilesam.registry.ModelConfig` the model was built from,
            set by `mobilesam.registry.build_from_config` (so copies and
            `.to()` keep it); None for a `Sam` assembled by hand.
    """

    mask_threshold: float = 0.0
    image_format: str = "RGB"
    config: Any = None

    def __init__(
        self,
        image_encoder: nn.Module,
        prompt_encoder: PromptEncoder,
        mask_decoder: MaskDecoder,
        pixel_mean: Sequence[float] = (123.675, 116.28, 103.53),
        pixel_std: Sequence[float] = (58.395, 57.12, 57.375),
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(-1, 1, 1), False)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @property
    def img_size(self) -> int:
        """Side of the square model input."""
        return self.image_encoder.img_size

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise a resized (..., 3, H, W) image in [0, 255] and zero-pad it to (S, S) at the bottom right."""
        x = (x - self.pixel_mean) / self.pixel_std
        h, w = x.shape[-2:]
        return F.pad(x, (0, self.img_size - w, 0, self.img_size - h))

    def postprocess_masks(self, masks: torch.Tensor, input_size: tuple[int, ...], original_size: tuple[int, ...]) -> torch.Tensor:
        """Upscale (B, M, h, w) low-res logits to the original image: (B, M, H, W) logits.

        Args:
            masks: Logits from the mask decoder.
            input_size: (H, W) of the resized image before padding.
            original_size: (H, W) of the image the user gave.
        """
        masks = F.interpolate(masks, (self.img_size, self.img_size), mode="bilinear", align_corners=False)
        masks = masks[..., : input_size[0], : input_size[1]]
        return F.interpolate(masks, tuple(original_size), mode="bilinear", align_corners=False)

    def forward(self, batched_input: list[dict[str, Any]], multimask_output: bool) -> list[dict[str, torch.Tensor]]:
        """Predict masks end to end for a list of images, each with its own prompts.

        Prefer `SamPredictor` when prompts arrive one after another: it keeps the
        image embedding. Run under `torch.inference_mode()` unless training.

        Args:
            batched_input: One dict per image with 'image' ((3, H, W) resized, not
                normalised), 'original_size' ((H, W)), and optionally 'point_coords'
                ((B, N, 2) model frame), 'point_labels' ((B, N)), 'boxes' ((B, 4)
                model frame) and 'mask_inputs' ((B, 1, 256, 256)).
            multimask_output: Return 3 masks per prompt instead of 1.

        Returns:
            One dict per image: 'masks' (B, M, H, W) bool at the original size,
            'iou_predictions' (B, M) and 'low_res_logits' (B, M, 256, 256).
        """
        input_images = torch.stack([self.preprocess(record["image"]) for record in batched_input], dim=0)
        image_embeddings = self.image_encoder(input_images)
        image_pe = self.prompt_encoder.get_dense_pe()
        outputs = []
        for record, embedding in zip(batched_input, image_embeddings):
            points = (record["point_coords"], record["point_labels"]) if "point_coords" in record else None
            sparse_embeddings, dense_embeddings = self.prompt_encoder(
                points=points, boxes=record.get("boxes"), masks=record.get("mask_inputs")
            )
            low_res_logits, iou_predictions = self.mask_decoder(
                image_embeddings=embedding.unsqueeze(0),
                image_pe=image_pe,
                sparse_prompt_embeddings=sparse_embeddings,
                dense_prompt_embeddings=dense_embeddings,
                multimask_output=multimask_output,
            )
            masks = self.postprocess_masks(low_res_logits, record["image"].shape[-2:], record["original_size"])
            outputs.append(
                {
                    "masks": masks > self.mask_threshold,
                    "iou_predictions": iou_predictions,
                    "low_res_logits": low_res_logits,
                }
            )
        return outputs
