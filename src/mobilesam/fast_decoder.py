"""The mask decoder's upscaling, and the logits' resizing to the image, as matrix products, for the fast backends.

After the two-way transformer, `MaskDecoder.masks_from_weights` turns the
image tokens (B, HW, C) into a (B, C, H, W) image, runs two 2x2-stride-2
transposed convolutions with a LayerNorm and GELUs between them, and applies
each mask token's weights to the (B, C/8, 4H, 4W) result. On a 2-core CPU a
click spends more time in that pass's layout copies (the transpose to
channels-first, and oneDNN's reorders around each convolution) than in its
arithmetic.

A 2x2 transposed convolution with stride 2 has no overlapping outputs: every
input pixel maps alone to its 2x2 output block, so it is one matrix product
(C_in -> 4 C_out) on the pixels as rows. Here both convolutions, the
LayerNorm (over channels, whatever the pixel order) and the GELUs run on
rows in the tokens' own order, and only the final (B, M, 4H, 4W) logits are
put in image order. The sums run in another order than oneDNN's, so the
logits agree with the model's to fp32 rounding (about 1e-5), not bit for bit:
this is for the backends whose names say they are not the reference numerics.

`postprocess_masks` does the same for `Sam.postprocess_masks`: its two
bilinear resizes are one matrix product per axis.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from .modeling import Sam
from .modeling.mask_decoder import MaskDecoder


def upscaled_masks(decoder: MaskDecoder, mask_weights: torch.Tensor, image_features: torch.Tensor) -> torch.Tensor:
    """What `decoder.masks_from_weights(mask_weights, image_features)` computes, without its layout copies.

    Args:
        decoder: The model's mask decoder (its `output_upscaling` weights are read on every call,
            so weights loaded later are used).
        mask_weights: (B, M, C/8) from `MaskDecoder.mask_weights`.
        image_features: (B, C, H, W) from `MaskDecoder.run_transformer`: a transposed view of
            contiguous (B, HW, C) tokens, which is read as it lies.

    Returns:
        (B, M, 4H, 4W) mask logits.
    """
    first, norm, _, second, _ = decoder.output_upscaling
    b, c, h, w = image_features.shape
    m = mask_weights.shape[1]
    tokens = image_features.flatten(2).transpose(1, 2)  # (B, HW, C), a view of the transformer's output
    first_weight, first_bias = _block_weight(first.weight).t().contiguous(), first.bias.repeat(4)
    second_weight, second_bias = _block_weight(second.weight).t().contiguous(), second.bias.repeat(4)
    logits = tokens.new_empty((b, m, 4 * h, 4 * w))
    # One prompt at a time: its temporaries (8 MiB at most) are reused from the heap, where a
    # batch's would be fresh pages to fault in on every call, which cost as much as the products.
    for i in range(b):
        # (HW * 4, C/4): each pixel's 2x2 block of the first upscaling, rows still in token order.
        x = torch.addmm(first_bias, tokens[i], first_weight).view(h * w * 4, -1)
        x = F.gelu(F.layer_norm(x, x.shape[-1:], norm.weight, norm.bias, norm.eps))
        # (HW * 16, C/8): the second upscaling of every first-stage pixel.
        x = F.gelu(torch.addmm(second_bias, x, second_weight)).view(h * w * 16, -1)
        # Pixel (4y + 2i + k, 4x + 2j + l) of mask m sits at row [y, x, i, j, k, l]: put it in image order.
        in_image_order = logits[i].view(m, h, 2, 2, w, 2, 2)  # (M, H, i, k, W, j, l)
        in_image_order.copy_((x @ mask_weights[i].t()).view(h, w, 2, 2, 2, 2, m).permute(6, 0, 2, 4, 1, 3, 5))
    return logits


def _block_weight(weight: torch.Tensor) -> torch.Tensor:
    """A 2x2 stride-2 transposed convolution's (C_in, C_out, 2, 2) weight as a (4 C_out, C_in) linear one.

    Output rows are ordered (i, j, C_out): the 2x2 block's row, column, then channel.
    """
    return weight.permute(2, 3, 1, 0).flatten(0, 2)


def postprocess_masks(
    model: Sam, masks: torch.Tensor, input_size: tuple[int, ...], original_size: tuple[int, ...]
) -> torch.Tensor:
    """What `model.postprocess_masks` computes, as one matrix product per axis when the image fits the model's input.

    Both of its bilinear interpolations (to the model's square input, then
    from the unpadded part to the original size) are linear maps along each
    axis, so together they are one (H, h) matrix for the rows and one (W, w)
    for the columns. For an image no larger than the input, those products
    cost less than the (S, S) intermediate the two passes write and read; for
    larger images the passes are cheaper, and run as they are. The sums run
    in another order: within fp32 rounding (about 1e-7 of the logits' scale).

    Args:
        model: The model whose input size (`img_size`) the logits were predicted at.
        masks: (B, M, h, w) low-res logits.
        input_size: (H, W) of the resized image before padding.
        original_size: (H, W) of the image the user gave.

    Returns:
        (B, M, H, W) logits at the original size.
    """
    height, width = original_size
    if max(height, width) > model.img_size:
        return model.postprocess_masks(masks, input_size, original_size)
    rows = _resize_matrix(masks.shape[-2], model.img_size, input_size[0], height).to(masks.device)
    columns = _resize_matrix(masks.shape[-1], model.img_size, input_size[1], width).to(masks.device).t()
    # The narrower side first: its intermediate is the smaller one.
    if height <= width:
        return (rows @ masks) @ columns
    return rows @ (masks @ columns)


@functools.lru_cache(maxsize=16)
def _resize_matrix(size: int, padded: int, unpadded: int, original: int) -> torch.Tensor:
    """(original, size) float32: bilinear from `size` to `padded`, the first `unpadded` kept, bilinear to `original`."""
    return (_bilinear_matrix(unpadded, original) @ _bilinear_matrix(size, padded)[:unpadded]).float()


def _bilinear_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in) float64: `F.interpolate(mode="bilinear", align_corners=False)` along one axis, as a matrix.

    Source positions and weights are computed in float32, as ATen computes them,
    so the matrix holds the very weights the interpolation uses.
    """
    scale = np.float32(n_in) / np.float32(n_out)
    source = np.maximum(scale * (np.arange(n_out, dtype=np.float32) + np.float32(0.5)) - np.float32(0.5), np.float32(0.0))
    first = np.minimum(np.floor(source).astype(np.int64), n_in - 1)
    second_weight = np.clip(source - first.astype(np.float32), 0.0, 1.0).astype(np.float32)
    second = np.where(first < n_in - 1, first + 1, first)
    matrix = np.zeros((n_out, n_in))
    np.add.at(matrix, (np.arange(n_out), first), np.float32(1.0) - second_weight)
    np.add.at(matrix, (np.arange(n_out), second), second_weight)
    return torch.from_numpy(matrix)
