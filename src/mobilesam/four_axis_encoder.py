"""A copy of a TinyViT image encoder whose tensors never exceed a leading 1 and four more axes.

Runtimes that hold at most 4-D tensors (ncnn's Mat has no batch axis and at
most four) cannot run TinyViT's window attention, which splits windows with
6-D reshapes. `four_axis_encoder_copy` is the TinyViT family's
`four_axis_encoder` (`mobilesam.families`): every `TinyViTBlock` of the copy
becomes a `FourAxisTinyViTBlock`, the same weights and the same arithmetic op
for op, with windows and heads merged into one axis where they must be.
The model itself is never changed.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .modeling import Sam
from .modeling.tiny_vit import AttentionStage, TinyViTBlock


class FourAxisTinyViTBlock(nn.Module):
    """A `TinyViTBlock` for batch 1 whose tensors have a leading 1 and at most four more axes (an ncnn Mat).

    Same weights (the block's own modules) and the same arithmetic, op for op; only the reshapes differ.
    """

    def __init__(self, block: TinyViTBlock) -> None:
        super().__init__()
        self.block = block

    def _attention(self, windows: torch.Tensor) -> torch.Tensor:
        """(1, W, N, C) windows -> (1, W, N, C): `Attention.forward` with windows and heads merged into one axis."""
        attn = self.block.attn
        _, num_windows, n, c = windows.shape
        heads, dim = attn.num_heads, attn.head_dim
        qkv = attn.qkv(attn.norm(windows)).view(1, num_windows, n, heads, 3 * dim)
        q, k, v = (t.permute(0, 1, 3, 2, 4).reshape(1, num_windows * heads, n, dim) for t in qkv.split(dim, dim=4))
        # The bias is per head: add it with windows and heads apart, the (N, N) scores flattened.
        bias = attn.attention_biases[:, attn.attention_bias_idxs].reshape(1, 1, heads, n * n)
        scores = ((q @ k.transpose(-2, -1)) * attn.scale).reshape(1, num_windows, heads, n * n) + bias
        probs = scores.reshape(1, num_windows * heads, n, n).softmax(dim=-1)
        out = (probs @ v).reshape(1, num_windows, heads, n, dim).transpose(2, 3).reshape(1, num_windows, n, c)
        return attn.proj(out)

    def _windowed_attention(self, x: torch.Tensor) -> torch.Tensor:
        h, w = self.block.resolution
        ws = self.block.window_size
        _, length, c = x.shape
        if h == ws and w == ws:
            return self._attention(x.view(1, 1, length, c)).view(1, length, c)
        x = x.view(1, h, w, c)
        pad_b, pad_r = (ws - h % ws) % ws, (ws - w % ws) % ws
        if pad_b or pad_r:
            x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        ph, pw = h + pad_b, w + pad_r
        nh, nw = ph // ws, pw // ws
        # A window row's ws * C values stay together, so the split needs one 5-D transpose, not a 6-D one.
        windows = x.reshape(1, nh, ws, nw, ws * c).transpose(2, 3).reshape(1, nh * nw, ws * ws, c)
        x = self._attention(windows).reshape(1, nh, nw, ws, ws * c).transpose(2, 3).reshape(1, ph, pw, c)
        if pad_b or pad_r:
            x = x[:, :h, :w]
        return x.reshape(1, length, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = self.block.resolution
        _, length, c = x.shape
        x = x + self._windowed_attention(x)
        x = self.block.local_conv(x.transpose(1, 2).reshape(1, c, h, w))
        x = x.reshape(1, c, length).transpose(1, 2)
        return x + self.block.mlp(x)


def four_axis_encoder_copy(model: Sam) -> nn.Module:
    """A copy of `model`'s TinyViT encoder for batch 1 with every tensor at most 1 + 4-D."""
    encoder = copy.deepcopy(model.image_encoder)
    for stage in encoder.layers:
        if isinstance(stage, AttentionStage):
            stage.blocks = nn.ModuleList(FourAxisTinyViTBlock(block) for block in stage.blocks)
    return encoder
