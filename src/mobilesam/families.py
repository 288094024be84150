"""Encoder families: one record per kind of image encoder, in one table that the rest of the package reads.

A new family is one modeling file (its encoder) and one `ModelFamily` given
to `register_family`; `mobilesam.registry.register_model` then names
configurations of it. Building, checkpoint detection, the fast torch backends
and the tests' rounding bound all read the record; nothing else branches on
the kind of encoder.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from .errors import CheckpointError
from .fast_encoder import fast_encoder_copy
from .four_axis_encoder import four_axis_encoder_copy
from .modeling import ImageEncoderViT, Sam, TinyViT
from .modeling.tiny_vit import MBConv, PatchMerging, TinyViTBlock
from .modeling.vit import Block as ViTBlock

if TYPE_CHECKING:
    from .registry import ModelConfig


@dataclass(frozen=True)
class TinyViTConfig:
    """Architecture of a TinyViT encoder (MobileSAM)."""

    # Input pixels per embedding pixel: the patch embedding and two merges each halve the side.
    patch_size: ClassVar[int] = 16

    embed_dims: tuple[int, ...] = (64, 128, 160, 320)
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (2, 4, 5, 10)
    window_sizes: tuple[int, ...] = (7, 7, 14, 7)
    mlp_ratio: float = 4.0
    mbconv_expand_ratio: float = 4.0
    local_conv_size: int = 3
    num_classes: int = 1000


@dataclass(frozen=True)
class ViTConfig:
    """Architecture of a SAM ViT encoder."""

    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]
    window_size: int = 14
    patch_size: int = 16
    mlp_ratio: float = 4.0


@dataclass(frozen=True)
class ModelFamily:
    """Everything the package needs to know about one kind of image encoder.

    Attributes:
        name: The family's name in messages ("TinyViT").
        config_type: The frozen dataclass of its architecture numbers; it must
            have `patch_size`, the input pixels per embedding pixel.
        build_encoder: (its config, the whole `ModelConfig`) -> a freshly
            initialised encoder, (B, 3, S, S) -> (B, prompt_embed_dim, S/patch_size, S/patch_size).
        recognise: (state dict, this family's registered configs) -> the name of
            the config whose weights these are, or None if they are not this
            family's; raises `CheckpointError` for this family's weights that fit
            none of its configs.
        fast_encoder: A model -> an inference-only rewritten copy of its encoder,
            for the torch-fast and torch-compile backends; None: an eval-mode copy as it is.
        layer_types: The encoder's modules that each count as one layer (residual
            blocks, downsamplings) in the tests' fp32 rounding bound.
        four_axis_encoder: A model -> a copy of its encoder for batch 1 whose tensors never
            exceed a leading 1 and four more axes (the ncnn format); None: the family has none.
    """

    name: str
    config_type: type
    build_encoder: Callable[[Any, ModelConfig], nn.Module]
    recognise: Callable[[Mapping[str, torch.Tensor], Sequence[ModelConfig]], str | None]
    fast_encoder: Callable[[Sam], nn.Module] | None
    layer_types: tuple[type[nn.Module], ...]
    four_axis_encoder: Callable[[Sam], nn.Module] | None = None


def _build_tiny_vit(encoder: TinyViTConfig, config: ModelConfig) -> nn.Module:
    return TinyViT(
        img_size=config.image_size,
        embed_dims=encoder.embed_dims,
        depths=encoder.depths,
        num_heads=encoder.num_heads,
        window_sizes=encoder.window_sizes,
        mlp_ratio=encoder.mlp_ratio,
        mbconv_expand_ratio=encoder.mbconv_expand_ratio,
        local_conv_size=encoder.local_conv_size,
        num_classes=encoder.num_classes,
        out_chans=config.prompt_embed_dim,
    )


def _recognise_tiny_vit(state_dict: Mapping[str, torch.Tensor], configs: Sequence[ModelConfig]) -> str | None:
    """TinyViT encoders are told apart by their first stage's width."""
    first_mbconv = state_dict.get("image_encoder.layers.0.blocks.0.conv1.c.weight")  # (hidden, width, 1, 1)
    if first_mbconv is None:
        return None
    return next((c.name for c in configs if c.encoder.embed_dims[0] == first_mbconv.shape[1]), None)


def _build_vit(encoder: ViTConfig, config: ModelConfig) -> nn.Module:
    return ImageEncoderViT(
        img_size=config.image_size,
        patch_size=encoder.patch_size,
        embed_dim=encoder.embed_dim,
        depth=encoder.depth,
        num_heads=encoder.num_heads,
        global_attn_indexes=encoder.global_attn_indexes,
        window_size=encoder.window_size,
        mlp_ratio=encoder.mlp_ratio,
        out_chans=config.prompt_embed_dim,
    )


def _recognise_vit(state_dict: Mapping[str, torch.Tensor], configs: Sequence[ModelConfig]) -> str | None:
    """SAM's ViTs are told apart by their width; the depth must then be that config's."""
    pos_embed = state_dict.get("image_encoder.pos_embed")  # (1, H/16, W/16, width)
    by_width = {c.encoder.embed_dim: c for c in configs}
    if pos_embed is None or pos_embed.shape[-1] not in by_width:
        return None
    config = by_width[pos_embed.shape[-1]]
    blocks = {int(m.group(1)) for k in state_dict if (m := re.match(r"image_encoder\.blocks\.(\d+)\.", k))}
    if len(blocks) != config.encoder.depth:
        raise CheckpointError(
            f"width {pos_embed.shape[-1]} means {config.name} with {config.encoder.depth} blocks, but the file has {len(blocks)}"
        )
    return config.name


FAMILIES: dict[type, ModelFamily] = {
    TinyViTConfig: ModelFamily(
        name="TinyViT",
        config_type=TinyViTConfig,
        build_encoder=_build_tiny_vit,
        recognise=_recognise_tiny_vit,
        fast_encoder=fast_encoder_copy,
        layer_types=(MBConv, PatchMerging, TinyViTBlock),
        four_axis_encoder=four_axis_encoder_copy,
    ),
    ViTConfig: ModelFamily(
        name="ViT",
        config_type=ViTConfig,
        build_encoder=_build_vit,
        recognise=_recognise_vit,
        # It has none of the layers that `fast_encoder_copy` rewrites.
        fast_encoder=None,
        layer_types=(ViTBlock,),
    ),
}
"""The registered families by config type, in the order checkpoint detection tries them."""


def register_family(family: ModelFamily) -> None:
    """Add a family to `FAMILIES`; its checkpoints are tried after those already registered.

    Raises:
        ValueError: A family for `family.config_type` is already registered.
    """
    taken = FAMILIES.get(family.config_type)
    if taken is not None:
        raise ValueError(f"{family.config_type.__name__} already belongs to the registered family {taken.name!r}")
    FAMILIES[family.config_type] = family


def family_of(encoder: object) -> ModelFamily:
    """The registered family of an encoder configuration.

    Raises:
        TypeError: `encoder` is no registered family's config type.
    """
    family = FAMILIES.get(type(encoder))
    if family is None:
        known = ", ".join(t.__name__ for t in FAMILIES)
        raise TypeError(f"no family registered for {type(encoder).__name__} (known: {known}); use register_family first")
    return family
