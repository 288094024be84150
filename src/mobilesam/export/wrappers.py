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

`DecoderOnnxModel` returns all four mask tokens: index 0 is the single-mask
output, 1..3 the multimask outputs (`MaskDecoder.forward`'s selection).
`SamOnnxModel` is SAM's own ONNX decoder contract (`segment_anything.utils.onnx`):
with ``return_single_mask`` it returns one mask per prompt, chosen by the
number of points. `PreprocessingEncoderOnnxModel` takes the raw resized image,
as the AnyLabeling family of apps feeds it.
"""

from __future__ import annotations

import torch
from torch import nn

from ..masks import calculate_stability_score
from ..modeling import Sam


class EncoderOnnxModel(nn.Module):
    """(1, 3, S, S) normalised, padded image -> (1, C, S/16, S/16) embedding."""

    def __init__(self, model: Sam) -> None:
        super().__init__()
        self.image_encoder = model.image_encoder

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.image_encoder(image)


class PreprocessingEncoderOnnxModel(nn.Module):
    """(H, W, 3) float32 image in [0, 255], long side already resized to S -> (1, C, S/16, S/16) embedding.

    The graph normalises, zero-pads to (S, S) and adds the batch axis with the
    model's own `Sam.preprocess`; H and W stay dynamic. Channels arrive RGB and
    are reversed here for a model that wants BGR.
    """

    def __init__(self, model: Sam) -> None:
        super().__init__()
        self.model = model
        self.reverse_channels = model.image_format == "BGR"

    def forward(self, input_image: torch.Tensor) -> torch.Tensor:
        if self.reverse_channels:
            input_image = input_image.flip(-1)
        image = input_image.permute(2, 0, 1).unsqueeze(0)  # (1, 3, H, W)
        return self.model.image_encoder(self.model.preprocess(image))


def decode_low_res(
    model: Sam,
    image_embeddings: torch.Tensor,
    point_coords: torch.Tensor,
    point_labels: torch.Tensor,
    mask_input: torch.Tensor,
    has_mask_input: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SAM's ONNX decoder inputs -> all mask tokens' low-res logits (B, 4, 256, 256) and IoU predictions (B, 4)."""
    prompt_encoder = model.prompt_encoder
    # Boxes arrive as corner points labelled 2/3 and padding is explicit, so
    # the points path covers every prompt; the padding is the caller's.
    sparse_embeddings = prompt_encoder._embed_points(point_coords, point_labels, pad=False)
    no_mask = prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
    dense_embeddings = prompt_encoder.mask_downscaling(mask_input) * has_mask_input + (1 - has_mask_input) * no_mask
    return model.mask_decoder.predict_masks(image_embeddings, prompt_encoder.get_dense_pe(), sparse_embeddings, dense_embeddings)


def upscale_masks(model: Sam, low_res_masks: torch.Tensor, orig_im_size: torch.Tensor) -> torch.Tensor:
    """(B, M, 256, 256) low-res logits -> (B, M, H, W) logits at `orig_im_size` ((2,) float32 (H, W))."""
    # The same rounding as transforms.get_preprocess_shape, on tensors so the size stays an input.
    scale = model.img_size / orig_im_size.max()
    input_size = torch.floor(orig_im_size * scale + 0.5).to(torch.int64)
    orig_size = orig_im_size.to(torch.int64)
    return model.postprocess_masks(low_res_masks, (input_size[0], input_size[1]), (orig_size[0], orig_size[1]))


class DecoderOnnxModel(nn.Module):
    """Prompt encoder + mask decoder + upscaling to the original image size, all four mask tokens."""

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
        low_res_masks, iou_predictions = decode_low_res(
            self.model, image_embeddings, point_coords, point_labels, mask_input, has_mask_input
        )
        return upscale_masks(self.model, low_res_masks, orig_im_size), iou_predictions, low_res_masks


class SamOnnxModel(nn.Module):
    """SAM's ONNX decoder (`segment_anything.utils.onnx.SamOnnxModel`'s contract) over our model's own modules.

    Args:
        model: The model whose prompt encoder, mask decoder and mask post-processing run.
        return_single_mask: Return one mask per prompt: the single-mask token where
            there are more than 2 points (the padding point counts), else the
            multimask token with the highest score (SAM's `select_masks` rule).
        use_stability_score: Score masks by their stability (offset 1.0) instead of predicted IoU.
        return_extra_metrics: Also return stability scores and mask areas, as SAM does.
    """

    def __init__(
        self,
        model: Sam,
        return_single_mask: bool,
        use_stability_score: bool = False,
        return_extra_metrics: bool = False,
    ) -> None:
        super().__init__()
        self.model = model
        self.mask_decoder = model.mask_decoder
        self.img_size = model.img_size
        self.return_single_mask = return_single_mask
        self.use_stability_score = use_stability_score
        self.stability_score_offset = 1.0
        self.return_extra_metrics = return_extra_metrics

    def select_masks(
        self, masks: torch.Tensor, iou_preds: torch.Tensor, num_points: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 4, h, w) masks, (B, 4) scores, number of points -> the chosen (B, 1, h, w) and (B, 1).

        A weight of 1000 on token 0, signed by the number of points against 2.5,
        picks without control flow, so the graph keeps both branches.
        """
        tokens = self.mask_decoder.num_mask_tokens
        reweight = torch.tensor([[1000.0] + [0.0] * (tokens - 1)])  # (1, 4), a constant of the graph
        best = torch.argmax(iou_preds + (num_points - 2.5) * reweight, dim=1)
        rows = torch.arange(masks.shape[0])
        return masks[rows, best].unsqueeze(1), iou_preds[rows, best].unsqueeze(1)

    def forward(
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
        orig_im_size: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        """SAM's inputs (see the module docstring) -> masks (B, M, H, W), iou_predictions (B, M), low_res_masks (B, M, 256, 256).

        M is 1 with `return_single_mask`, else 4. With `return_extra_metrics` the
        outputs are masks, scores, stability_scores (B, M), areas (B, M), low_res_masks.
        """
        low_res_masks, scores = decode_low_res(
            self.model, image_embeddings, point_coords, point_labels, mask_input, has_mask_input
        )
        threshold = self.model.mask_threshold
        if self.use_stability_score:
            scores = calculate_stability_score(low_res_masks, threshold, self.stability_score_offset)
        if self.return_single_mask:
            # Counted from a tensor, so the traced graph keeps the number of points dynamic.
            num_points = torch.ones_like(point_labels).sum(dim=1, keepdim=True)  # (B, 1)
            low_res_masks, scores = self.select_masks(low_res_masks, scores, num_points)
        masks = upscale_masks(self.model, low_res_masks, orig_im_size)
        if self.return_extra_metrics:
            stability_scores = calculate_stability_score(masks, threshold, self.stability_score_offset)
            areas = (masks > threshold).sum(-1).sum(-1)
            return masks, scores, stability_scores, areas, low_res_masks
        return masks, scores, low_res_masks
