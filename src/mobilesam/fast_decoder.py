"""The mask decoder's upscaling as matrix products on the transformer's token layout, for the fast backends.

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
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

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
    tokens = image_features.flatten(2).transpose(1, 2)  # (B, HW, C), a view of the transformer's output
    # (B, HW, 2, 2, C/4): each pixel's 2x2 block of the first upscaling, rows still in token order.
    x = F.linear(tokens, _block_weight(first.weight), first.bias.repeat(4)).view(b, h * w, 2, 2, -1)
    x = F.gelu(F.layer_norm(x, x.shape[-1:], norm.weight, norm.bias, norm.eps))
    # (B, HW, 2, 2, 2, 2, C/8): the second upscaling of every first-stage pixel.
    x = F.gelu(F.linear(x, _block_weight(second.weight), second.bias.repeat(4)).view(b, h * w, 2, 2, 2, 2, -1))
    logits = x.flatten(1, 5) @ mask_weights.transpose(1, 2)  # (B, HW * 16, M)
    # Pixel (4y + 2i + k, 4x + 2j + l) of mask m sits at [y, x, i, j, k, l, m]: put it in image order.
    logits = logits.view(b, h, w, 2, 2, 2, 2, -1).permute(0, 7, 1, 3, 5, 2, 4, 6)  # (B, M, H, i, k, W, j, l)
    return logits.reshape(b, -1, 4 * h, 4 * w)


def _block_weight(weight: torch.Tensor) -> torch.Tensor:
    """A 2x2 stride-2 transposed convolution's (C_in, C_out, 2, 2) weight as a (4 C_out, C_in) linear one.

    Output rows are ordered (i, j, C_out): the 2x2 block's row, column, then channel.
    """
    return weight.permute(2, 3, 1, 0).flatten(0, 2)
