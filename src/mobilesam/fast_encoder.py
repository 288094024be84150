"""Inference-only rewrites of a copy of a TinyViT image encoder, for CPUs that memory bandwidth limits.

`fast_encoder_copy` is the TinyViT family's `fast_encoder`
(`mobilesam.families`), which the torch-fast and torch-compile backends run.

TinyViT's first stage works at 256x256 with 4x-wide MBConv blocks: each of
their hidden activations is a 64 MiB tensor, and on the development machine
(about 3 GB/s of memory bandwidth) streaming those through memory, not the
arithmetic, is what the stage costs. The rewrites here:

- fold every BatchNorm into the convolution before it (`fold_batch_norms`);
- run each MBConv block in strips of rows (`StripedMBConv`), so a strip's
  hidden activations stay in cache from the expanding convolution to the
  projecting one;
- run each transformer MLP on chunks of tokens (`ChunkedMlp`), for the same
  reason (its hidden layer is 4x wide too);
- keep the copy channels-last, where a strip of rows is one contiguous block.

The results agree with the model to float rounding (about 1e-5 on the
embedding); the model itself is never changed.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .modeling import Sam
from .modeling.tiny_vit import ConvBN, MBConv, Mlp

# Rows per MBConv strip: at 256 columns and 256 hidden channels a strip's
# hidden activations take 4 MiB, which stays in this CPU's L3 cache.
STRIP_ROWS = 16
# Tokens per MLP chunk: 2048 tokens of a 512-wide hidden layer take 4 MiB.
CHUNK_TOKENS = 2048


class StripedMBConv(nn.Module):
    """An `MBConv` block (BatchNorms folded) computed in strips of rows on (B, C, H, W).

    Each strip expands its rows plus one halo row on either side, since the
    3x3 depthwise convolution reads one row beyond the strip.
    """

    def __init__(self, block: MBConv, rows: int = STRIP_ROWS) -> None:
        super().__init__()
        self.conv1, self.conv2, self.conv3 = (_folded(c) for c in (block.conv1, block.conv2, block.conv3))
        if self.conv2.kernel_size != (3, 3) or self.conv2.padding != (1, 1) or self.conv2.stride != (1, 1):
            raise ValueError("StripedMBConv expects a 3x3, stride 1, padding 1 depthwise convolution")
        self.act1, self.act2, self.act3 = block.act1, block.act2, block.act3
        self.rows = rows

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height = x.shape[2]
        depthwise = self.conv2
        strips = []
        for top in range(0, height, self.rows):
            bottom = min(top + self.rows, height)
            first, last = max(top - 1, 0), min(bottom + 1, height)
            hidden = self.act1(self.conv1(x[:, :, first:last]))
            # The depthwise convolution pads with zeros only at the image's own edges.
            hidden = F.pad(hidden, (1, 1, int(top == 0), int(bottom == height)))
            hidden = F.conv2d(hidden, depthwise.weight, depthwise.bias, groups=depthwise.groups)
            strips.append(self.act3(self.conv3(self.act2(hidden)) + x[:, :, top:bottom]))
        return torch.cat(strips, dim=2)


class ChunkedMlp(nn.Module):
    """A TinyViT `Mlp` (LayerNorm, fc1, GELU, fc2) applied to (B, N, C) tokens `tokens` at a time."""

    def __init__(self, mlp: Mlp, tokens: int = CHUNK_TOKENS) -> None:
        super().__init__()
        self.mlp = mlp
        self.tokens = tokens

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.mlp(x[:, i : i + self.tokens]) for i in range(0, x.shape[1], self.tokens)], dim=1)


def fast_encoder_copy(model: Sam) -> nn.Module:
    """An eval-mode, channels-last copy of `model`'s encoder: BatchNorms folded, MBConv in strips, MLPs in chunks."""
    encoder = fold_batch_norms(copy.deepcopy(model.image_encoder).eval())
    for parent in list(encoder.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, MBConv):
                setattr(parent, name, StripedMBConv(child))
            elif isinstance(child, Mlp):
                setattr(parent, name, ChunkedMlp(child))
    return encoder.to(memory_format=torch.channels_last)


def fold_batch_norms(module: nn.Module) -> nn.Module:
    """Replace every Conv2d followed by an eval-mode BatchNorm2d (`ConvBN`) with one biased Conv2d, in place."""
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, ConvBN):
                setattr(parent, name, _folded(child))
    return module


def _folded(conv: nn.Module) -> nn.Conv2d:
    """`conv` as one Conv2d: a `ConvBN` folded (eval mode), a Conv2d as it is."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    return fuse_conv_bn_eval(conv.c, conv.bn) if isinstance(conv, ConvBN) else conv
