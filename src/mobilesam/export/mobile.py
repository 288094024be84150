"""The graphs the phone formats convert: static-shape encoder on raw pixels, decoder on SAM's prompts, low-res out.

Phone runtimes (ExecuTorch, LiteRT, CoreML, ncnn) and TorchScript take the same
two modules, so every format has one contract (`runtime.layout`):

- `PixelEncoder`: "image" (1, S, S, 3) float32 RGB in [0, 255], the image
  resized so its long side is S at the top left, and "image_size" (2,) float32
  (h, w) of that resized image. The graph normalises, zeroes everything outside
  (h, w) (SAM's zero padding after normalising) and runs the image encoder, so
  the app hands over its bitmap and never pads with the mean.
- `LowResDecoder`: SAM's ONNX decoder inputs but `orig_im_size`, returning
  "iou_predictions" (B, 4) and "low_res_masks" (B, 4, 256, 256); with
  ``single_mask``, one mask per prompt by SAM's `select_masks` rule. The app
  upscales the logits (`APP_CONTRACT`), so the graph has no data-dependent shape.

Both use only arithmetic (no integer gathers or comparisons on the prompt path),
which every mobile converter lowers.
"""

from __future__ import annotations

import torch
from torch import nn

from ..modeling import Sam
from ..runtime.layout import graph_entry

ENCODER_INPUTS = ("image", "image_size")
ENCODER_OUTPUTS = ("image_embeddings",)
DECODER_INPUTS = ("image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input")
DECODER_OUTPUTS = ("iou_predictions", "low_res_masks")
# The point labels SAM knows, in the order of `PromptEncoder._label_table`'s rows.
LABELS = (-1.0, 0.0, 1.0, 2.0, 3.0)

# What the app does around the graphs, written into every phone export's sidecar.
APP_CONTRACT = {
    "resize": "resize the RGB image so its long side is image_size (h, w = round(H * s), round(W * s), "
    "s = image_size / max(H, W), bilinear); put it at the top left of an image_size square; "
    "feed image (1, S, S, 3) float32 in [0, 255] and image_size [h, w]",
    "coordinates": "point and box coordinates are in the resized image: x * w / W, y * h / H; a box is two "
    "points labelled 2 (top left) and 3 (bottom right); without a box, add one point (0, 0) labelled -1",
    "masks": "low_res_masks are logits on a 256 x 256 grid of the padded square: upscale bilinearly to "
    "image_size, crop to (h, w), upscale to (H, W), and keep logits > mask_threshold",
    "mask_input": "a previous low_res_masks row (1, 1, 256, 256) with has_mask_input [1], else zeros and [0]",
}


class PixelEncoder(nn.Module):
    """(1, S, S, 3) float32 pixels and (2,) resized (h, w) -> (1, C, S/16, S/16) embedding."""

    def __init__(self, model: Sam) -> None:
        super().__init__()
        self.image_encoder = model.image_encoder
        self.reverse_channels = model.image_format == "BGR"
        side = model.img_size
        self.register_buffer("pixel_mean", model.pixel_mean.reshape(1, 3, 1, 1).clone(), False)
        self.register_buffer("pixel_std", model.pixel_std.reshape(1, 3, 1, 1).clone(), False)
        self.register_buffer("rows", torch.arange(side, dtype=torch.float32).reshape(side, 1), False)
        self.register_buffer("cols", torch.arange(side, dtype=torch.float32).reshape(1, side), False)

    def forward(self, image: torch.Tensor, image_size: torch.Tensor) -> torch.Tensor:
        pixels = image.permute(0, 3, 1, 2)  # (1, 3, S, S)
        if self.reverse_channels:
            pixels = pixels.flip(1)
        normalised = (pixels - self.pixel_mean) / self.pixel_std
        # Sizes and indices are whole numbers, so clamp(h - row, 0, 1) is 1 inside the image and 0 below it.
        inside = torch.clamp(image_size[0] - self.rows, 0.0, 1.0) * torch.clamp(image_size[1] - self.cols, 0.0, 1.0)
        return self.image_encoder(normalised * inside)


def label_one_hot(point_labels: torch.Tensor) -> torch.Tensor:
    """(B, N) labels in `LABELS` -> (B, N, 5) one-hot, by Lagrange polynomials: exact on whole numbers, no comparisons."""
    columns = []
    for k in LABELS:
        column = torch.ones_like(point_labels)
        for j in LABELS:
            if j != k:
                column = column * (point_labels - j) / (k - j)
        columns.append(column)
    return torch.stack(columns, dim=-1)


class LowResDecoder(nn.Module):
    """SAM's prompt inputs (no `orig_im_size`) -> iou_predictions (B, M) and low_res_masks (B, M, 256, 256).

    M is 4 (token 0 the single-mask output, 1-3 the multimask ones), or 1 with `single_mask`.
    """

    def __init__(self, model: Sam, single_mask: bool = False) -> None:
        super().__init__()
        self.model = model
        self.single_mask = single_mask
        first_token = torch.zeros(1, model.mask_decoder.num_mask_tokens)
        first_token[0, 0] = 1.0
        self.register_buffer("first_token", first_token, persistent=False)

    def forward(
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        prompt_encoder = self.model.prompt_encoder
        one_hot = label_one_hot(point_labels)  # (B, N, 5)
        positions = prompt_encoder.pe_layer.forward_with_coords(point_coords + 0.5, prompt_encoder.input_image_size)
        # Padding points (column 0) carry only the not-a-point embedding, as in `_embed_points`.
        sparse_embeddings = positions * (1.0 - one_hot[..., :1]) + one_hot @ prompt_encoder._label_table()
        no_mask = prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
        dense_embeddings = prompt_encoder.mask_downscaling(mask_input) * has_mask_input + (1.0 - has_mask_input) * no_mask
        low_res_masks, iou_predictions = self.model.mask_decoder.predict_masks(
            image_embeddings, prompt_encoder.get_dense_pe(), sparse_embeddings, dense_embeddings
        )
        if self.single_mask:
            low_res_masks, iou_predictions = self._select_single(low_res_masks, iou_predictions, point_labels)
        return iou_predictions, low_res_masks

    def _select_single(
        self, low_res_masks: torch.Tensor, iou_predictions: torch.Tensor, point_labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """SAM's `select_masks`: token 0 when there are more than 2 points (padding included), else the best multimask one.

        N is summed from the labels and the best token found with `floor`, not read
        from a shape or compared: converters without symbolic floats (Core ML, the
        ExecuTorch verifier) or comparison layers (ncnn) take the same graph.
        """
        num_points = (point_labels * 0.0 + 1.0).sum(dim=1, keepdim=True)  # (B, 1)
        scores = iou_predictions + (num_points - 2.5) * 1000.0 * self.first_token
        # floor(d) is 0 for d = 0 and at most -1 below it: 1 where a score is its row's max, else 0 (ties: all).
        chosen = 1.0 + torch.clamp(torch.floor(scores - scores.max(dim=1, keepdim=True).values), -1.0, 0.0)
        chosen = chosen / chosen.sum(dim=1, keepdim=True)
        masks = (low_res_masks * chosen[..., None, None]).sum(dim=1, keepdim=True)
        return masks, (iou_predictions * chosen).sum(dim=1, keepdim=True)


def example_inputs(model: Sam, num_points: int = 2) -> dict[str, tuple[torch.Tensor, ...]]:
    """Inputs to trace or export each graph with: role -> positional inputs (a box prompt: its two corners)."""
    side = model.img_size
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(1, side, side, 3, generator=generator) * 255
    image_size = torch.tensor([side * 3 // 4, float(side)])
    embedding_size = side // 16
    embeddings = torch.randn(1, model.prompt_encoder.embed_dim, embedding_size, embedding_size, generator=generator)
    coords = torch.rand(1, num_points, 2, generator=generator) * side
    labels = torch.tensor([[2.0, 3.0] + [1.0] * (num_points - 2)])[:, :num_points]
    mask_input = torch.zeros(1, 1, 4 * embedding_size, 4 * embedding_size)
    decoder = (embeddings, coords, labels, mask_input, torch.zeros(1))
    return {"encoder": (image, image_size), "decoder": decoder}


def decoder_inputs(embedding: torch.Tensor, batch: int, points: int, *, seed: int, with_mask: bool) -> tuple[torch.Tensor, ...]:
    """`LowResDecoder` inputs for `batch` prompts of `points` points each, to check a captured decoder with.

    Labels cycle through every kind (a box's corners first); coordinates and
    the mask input are seeded random.
    """
    generator = torch.Generator().manual_seed(seed)
    side = 16 * embedding.shape[-1]
    coords = torch.rand(batch, points, 2, generator=generator) * side
    labels = torch.tensor([2.0, 3.0, 1.0, 0.0, -1.0]).repeat(points // 5 + 1)[:points].expand(batch, -1).contiguous()
    mask_side = 4 * embedding.shape[-1]
    mask_input = torch.randn(batch, 1, mask_side, mask_side, generator=generator)
    has_mask_input = torch.tensor([1.0 if with_mask else 0.0])
    return embedding, coords, labels, mask_input, has_mask_input


def mobile_graphs(encoder_file: str, decoder_file: str, single_file: str | None = None, *, batch: int | None = None) -> dict:
    """The sidecar's "graphs" for a phone export: the pixel encoder, the decoder and (if written) the single-mask one."""
    graphs = {
        "encoder": graph_entry(encoder_file, ENCODER_INPUTS, ENCODER_OUTPUTS, layout="pixels"),
        "decoder": graph_entry(decoder_file, DECODER_INPUTS, DECODER_OUTPUTS, batch=batch),
    }
    if single_file is not None:
        graphs["decoder_single"] = graph_entry(single_file, DECODER_INPUTS, DECODER_OUTPUTS, batch=batch)
    return graphs
