"""The modules `torch.onnx.export` traces: thin wrappers over the model's own modules.

The decoder takes prompts the way SAM's ONNX decoder does, so graphs made
for `segment_anything` work with the same client code:

- ``point_coords`` (B, N, 2) float32 XY in the model frame (after
  `ResizeLongestSide.apply_coords`); a box is two points, its top-left and
  bottom-right corners;
- ``point_labels`` (B, N) float32: 1 foreground, 0 background, 2 box
  top-left, 3 box bottom-right, -1 padding (add one padding point at (0, 0)
  when there is no box, as `SamPredictor` does);
- ``mask_input`` (B, 1, 256, 256) low-res logits and ``has_mask_input`` (1,)
  1.0 or 0.0;
- ``orig_im_size`` (2,) float32 (H, W) of the user's image.

It returns all four mask tokens: index 0 is the single-mask output,
1..3 the multimask outputs (`MaskDecoder.forward`'s selection).
"""

from __future__ import annotations

import torch
from torch import nn

from ..modeling import Sam


class EncoderOnnxModel(nn.Module):
    """(1, 3, S, S) normalised, padded image -> (1, C, S/16, S/16) embedding."""

    def __init__(self, model: Sam) -> None:
        super().__init__()
        self.image_encoder = model.image_encoder

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.image_encoder(image)


class DecoderOnnxModel(nn.Module):
    """Prompt encoder + mask decoder + upscaling to the original image size."""

    def __init__(self, model: Sam) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
        orig_im_size: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns masks (B, 4, H, W) logits at `orig_im_size`, iou_predictions (B, 4), low_res_masks (B, 4, 256, 256)."""
        prompt_encoder = self.model.prompt_encoder
        # Boxes arrive as corner points labelled 2/3 and padding is explicit, so
        # the points path covers every prompt; the padding is the caller's.
        sparse_embeddings = prompt_encoder._embed_points(point_coords, point_labels, pad=False)
        no_mask = prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
        dense_embeddings = prompt_encoder.mask_downscaling(mask_input) * has_mask_input + (1 - has_mask_input) * no_mask
        low_res_masks, iou_predictions = self.model.mask_decoder.predict_masks(
            image_embeddings, prompt_encoder.get_dense_pe(), sparse_embeddings, dense_embeddings
        )
        # The same rounding as transforms.get_preprocess_shape, on tensors so the size stays an input.
        scale = self.model.img_size / orig_im_size.max()
        input_size = torch.floor(orig_im_size * scale + 0.5).to(torch.int64)
        orig_size = orig_im_size.to(torch.int64)
        masks = self.model.postprocess_masks(low_res_masks, (input_size[0], input_size[1]), (orig_size[0], orig_size[1]))
        return masks, iou_predictions, low_res_masks
