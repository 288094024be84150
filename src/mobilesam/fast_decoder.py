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
bilinear resizes are one banded matrix product per axis.
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
        # Pixel (4y + 2i + k, 4x + 2j + l) of mask m sits at column [y, x, i, j, k, l]: put it in image order.
        _to_image_order(mask_weights[i] @ x.t(), logits[i], h, w)
    return logits


def _to_image_order(block_major: torch.Tensor, out: torch.Tensor, h: int, w: int) -> None:
    """Copy (M, [y, x, i, j, k, l]) logits into `out` (M, 4H, 4W) at pixel (4y + 2i + k, 4x + 2j + l).

    Both layouts end in l, so each pair of neighbours moves as one integer of
    twice the width: a copy with twice as long inner runs, several times faster.
    """
    m = block_major.shape[0]
    pair = _PAIR_TYPES.get(block_major.element_size())
    if pair is None:
        out.view(m, h, 2, 2, w, 2, 2).copy_(block_major.view(m, h, w, 2, 2, 2, 2).permute(0, 1, 3, 5, 2, 4, 6))
        return
    source = block_major.view(pair).view(m, h, w, 2, 2, 2)  # (M, y, x, i, j, k), each item an (l = 0, 1) pair
    out.view(pair).view(m, h, 2, 2, w, 2).copy_(source.permute(0, 1, 3, 5, 2, 4))  # (M, y, i, k, x, j)


_PAIR_TYPES = {2: torch.int32, 4: torch.int64}


def _block_weight(weight: torch.Tensor) -> torch.Tensor:
    """A 2x2 stride-2 transposed convolution's (C_in, C_out, 2, 2) weight as a (4 C_out, C_in) linear one.

    Output rows are ordered (i, j, C_out): the 2x2 block's row, column, then channel.
    """
    return weight.permute(2, 3, 1, 0).flatten(0, 2)


def postprocess_masks(
    model: Sam, masks: torch.Tensor, input_size: tuple[int, ...], original_size: tuple[int, ...]
) -> torch.Tensor:
    """What `model.postprocess_masks` computes, as one banded matrix product per axis when the image fits the model's input.

    Both of its bilinear interpolations (to the model's square input, then
    from the unpadded part to the original size) are linear maps along each
    axis, so together they are one (H, h) matrix for the rows and one (W, w)
    for the columns. Each output pixel reads only a few neighbours, so each
    block of output rows is a product with only the band of inputs it reads
    (`_BandedMatrix`): the skipped weights are exact zeros. For an image no
    larger than the input, those products cost less than the (S, S)
    intermediate the two passes write and read; for larger images the passes
    are cheaper, and run as they are. The sums run in another order: within
    fp32 rounding (about 1e-7 of the logits' scale).

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
    rows = _banded_resize(masks.shape[-2], model.img_size, input_size[0], height)
    columns = _banded_resize(masks.shape[-1], model.img_size, input_size[1], width)
    stacked = masks.reshape(-1, *masks.shape[-2:])  # (B * M, h, w)
    # Columns first: the row pass, batched products over whole rows, is the faster of the two per output.
    return rows.along_rows(columns.along_columns(stacked)).view(*masks.shape[:-2], height, width)


class _BandedMatrix:
    """A resize matrix as blocks of output rows, each with the band of input indices it reads.

    Each block holds `(output rows, first input index, (rows, width) weights)`.
    All bands have the same width, moved inward at the edges, so every
    product has the same shape.
    """

    _BLOCK = 64  # output rows per block: bands of about 34 inputs for a 2x upscale

    def __init__(self, matrix: torch.Tensor) -> None:
        n_out, n_in = matrix.shape
        nonzero = matrix != 0
        spans = []
        for first_row in range(0, n_out, self._BLOCK):
            rows = slice(first_row, min(first_row + self._BLOCK, n_out))
            read = nonzero[rows].any(dim=0).nonzero()[:, 0]
            spans.append((rows, int(read.min()), int(read.max())))
        self.width = max(last - first + 1 for _, first, last in spans)
        if 2 * self.width > n_in:
            # The bands cover most inputs: one product with the whole matrix.
            self.width, spans = n_in, [(slice(0, n_out), 0, n_in - 1)]
        self.n_out = n_out
        self.blocks = []
        for rows, first, _ in spans:
            start = min(first, n_in - self.width)
            self.blocks.append((rows, start, matrix[rows, start : start + self.width].contiguous()))

    def along_rows(self, x: torch.Tensor) -> torch.Tensor:
        """(N, n_out, w) from (N, n_in, w): the matrix applied to each of the N images' columns."""
        out = x.new_empty((x.shape[0], self.n_out, x.shape[2]))
        for rows, start, weight in self.blocks:
            weights = weight.to(x.device, x.dtype).expand(len(x), -1, -1)
            torch.bmm(weights, x[:, start : start + self.width], out=out[:, rows])
        return out

    def along_columns(self, x: torch.Tensor) -> torch.Tensor:
        """(N, h, n_out) from (N, h, n_in): the matrix applied to each row."""
        out = x.new_empty((*x.shape[:2], self.n_out))
        flat_in, flat_out = x.reshape(-1, x.shape[2]), out.view(-1, self.n_out)
        for columns, start, weight in self.blocks:
            torch.mm(flat_in[:, start : start + self.width], weight.to(x.device, x.dtype).t(), out=flat_out[:, columns])
        return out


@functools.lru_cache(maxsize=16)
def _banded_resize(size: int, padded: int, unpadded: int, original: int) -> _BandedMatrix:
    """`_resize_matrix`'s (original, size) matrix in bands."""
    return _BandedMatrix(_resize_matrix(size, padded, unpadded, original))


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
