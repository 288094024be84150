"""Model configurations by name, each with its published checkpoint, and the one builder of `Sam` modules."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch

from . import weights
from .errors import CheckpointError, UnknownModelError
from .modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TinyViT, TwoWayTransformer
from .weights import Checkpoint


@dataclass(frozen=True)
class TinyViTConfig:
    """Architecture of a TinyViT encoder (MobileSAM)."""

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
class ModelConfig:
    """Everything needed to build one named model; what is shared has defaults."""

    name: str
    description: str
    encoder: TinyViTConfig | ViTConfig
    checkpoint: Checkpoint | None = None  # the published weights, if any
    image_size: int = 1024
    prompt_embed_dim: int = 256
    mask_in_chans: int = 16
    decoder_depth: int = 2
    decoder_num_heads: int = 8
    decoder_mlp_dim: int = 2048
    num_multimask_outputs: int = 3
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    pixel_mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    pixel_std: tuple[float, float, float] = (58.395, 57.12, 57.375)
    aliases: tuple[str, ...] = field(default=())


_SAM_URL = "https://dl.fbaipublicfiles.com/segment_anything/"

MODEL_CONFIGS: dict[str, ModelConfig] = {
    "vit_t": ModelConfig(
        name="vit_t",
        description="MobileSAM: TinyViT-5M encoder distilled from SAM ViT-H",
        encoder=TinyViTConfig(),
        checkpoint=Checkpoint(
            "mobile_sam.pt",
            (
                "https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt",
                "https://github.com/ultralytics/assets/releases/download/v8.3.0/mobile_sam.pt",
            ),
            "6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f",
            40_728_226,
        ),
        aliases=("mobile_sam",),
    ),
    "vit_b": ModelConfig(
        name="vit_b",
        description="SAM ViT-B",
        encoder=ViTConfig(embed_dim=768, depth=12, num_heads=12, global_attn_indexes=(2, 5, 8, 11)),
        checkpoint=Checkpoint(
            "sam_vit_b_01ec64.pth",
            (_SAM_URL + "sam_vit_b_01ec64.pth",),
            "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
            375_042_383,
        ),
        aliases=("sam_b",),
    ),
    "vit_l": ModelConfig(
        name="vit_l",
        description="SAM ViT-L",
        encoder=ViTConfig(embed_dim=1024, depth=24, num_heads=16, global_attn_indexes=(5, 11, 17, 23)),
        checkpoint=Checkpoint(
            "sam_vit_l_0b3195.pth",
            (_SAM_URL + "sam_vit_l_0b3195.pth",),
            "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
        ),
        aliases=("sam_l",),
    ),
    "vit_h": ModelConfig(
        name="vit_h",
        description="SAM ViT-H (the original Segment Anything model)",
        encoder=ViTConfig(embed_dim=1280, depth=32, num_heads=16, global_attn_indexes=(7, 15, 23, 31)),
        checkpoint=Checkpoint(
            "sam_vit_h_4b8939.pth",
            (_SAM_URL + "sam_vit_h_4b8939.pth",),
            "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
            2_564_550_879,
        ),
        aliases=("sam_h", "default"),
    ),
}


def get_config(name: str) -> ModelConfig:
    """The configuration registered under `name` or one of its aliases.

    Raises:
        UnknownModelError: No such model.
    """
    for config in MODEL_CONFIGS.values():
        if name == config.name or name in config.aliases:
            return config
    known = ", ".join(MODEL_CONFIGS)
    raise UnknownModelError(f"unknown model {name!r}; known models: {known}")


def known_checkpoints() -> dict[str, Checkpoint]:
    """The published checkpoints by filename, read off `MODEL_CONFIGS`."""
    return {config.checkpoint.filename: config.checkpoint for config in MODEL_CONFIGS.values() if config.checkpoint}


def resolve_checkpoint(
    name_or_path: str | os.PathLike[str],
    *,
    download_missing: bool = True,
    progress: bool = True,
    urls: Sequence[str] | None = None,
) -> Path:
    """Find a checkpoint: an existing path, else a known filename in the cache, else download it.

    Args:
        name_or_path: A file path or a known filename such as "mobile_sam.pt".
        download_missing: Fetch a known checkpoint that is not cached.
        progress: Show a progress bar while downloading.
        urls: Download from these instead of the published URLs (mirrors, tests).

    Raises:
        FileNotFoundError: Neither an existing file nor a known checkpoint.
        DownloadError: Not cached and could not be fetched; says where to put the file by hand.
        CheckpointError: The cached file has the wrong size, or the download the wrong checksum.
    """
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    known = known_checkpoints()
    # Only a bare filename names a published checkpoint; "dir/mobile_sam.pt" is a path that is not there.
    checkpoint = known.get(path.name) if path.parent == Path(".") else None
    if checkpoint is None:
        raise FileNotFoundError(f"checkpoint not found: {name_or_path} (known checkpoints: {', '.join(known)})")
    return weights.fetch_checkpoint(checkpoint, download_missing=download_missing, progress=progress, urls=urls)


def build_from_config(config: ModelConfig) -> Sam:
    """A freshly initialised `Sam` (train mode, CPU or the current default device)."""
    enc = config.encoder
    if isinstance(enc, TinyViTConfig):
        image_encoder: torch.nn.Module = TinyViT(
            img_size=config.image_size,
            embed_dims=enc.embed_dims,
            depths=enc.depths,
            num_heads=enc.num_heads,
            window_sizes=enc.window_sizes,
            mlp_ratio=enc.mlp_ratio,
            mbconv_expand_ratio=enc.mbconv_expand_ratio,
            local_conv_size=enc.local_conv_size,
            num_classes=enc.num_classes,
            out_chans=config.prompt_embed_dim,
        )
        patch_size = 16
    else:
        image_encoder = ImageEncoderViT(
            img_size=config.image_size,
            patch_size=enc.patch_size,
            embed_dim=enc.embed_dim,
            depth=enc.depth,
            num_heads=enc.num_heads,
            global_attn_indexes=enc.global_attn_indexes,
            window_size=enc.window_size,
            mlp_ratio=enc.mlp_ratio,
            out_chans=config.prompt_embed_dim,
        )
        patch_size = enc.patch_size
    grid = config.image_size // patch_size
    prompt_encoder = PromptEncoder(
        embed_dim=config.prompt_embed_dim,
        image_embedding_size=(grid, grid),
        input_image_size=(config.image_size, config.image_size),
        mask_in_chans=config.mask_in_chans,
    )
    mask_decoder = MaskDecoder(
        transformer_dim=config.prompt_embed_dim,
        transformer=TwoWayTransformer(
            depth=config.decoder_depth,
            embedding_dim=config.prompt_embed_dim,
            num_heads=config.decoder_num_heads,
            mlp_dim=config.decoder_mlp_dim,
        ),
        num_multimask_outputs=config.num_multimask_outputs,
        iou_head_depth=config.iou_head_depth,
        iou_head_hidden_dim=config.iou_head_hidden_dim,
    )
    return Sam(image_encoder, prompt_encoder, mask_decoder, config.pixel_mean, config.pixel_std)


def build_sam(
    name: str = "vit_t",
    checkpoint: str | os.PathLike[str] | None = None,
    *,
    device: str | torch.device = "cpu",
) -> Sam:
    """Build a named model in eval mode, optionally with weights.

    Args:
        name: A registered model name ("vit_t", "vit_b", "vit_l", "vit_h") or alias.
        checkpoint: A file path or a known checkpoint filename (fetched into the
            cache if missing); None leaves the weights randomly initialised.
        device: Where the model ends up; weights are always loaded on the CPU first.

    Raises:
        UnknownModelError: Unknown name.
        CheckpointError: The checkpoint is unreadable or belongs to another model.
    """
    config = get_config(name)
    if checkpoint is None:
        return build_from_config(config).to(device).eval()
    path, state_dict, found = _read_checkpoint(checkpoint)
    if found != config.name:
        raise CheckpointError(f"{path} holds a {found!r} model, not {config.name!r}; use build_sam({found!r}, ...)")
    return _with_weights(config, state_dict, path, device)


def load_sam(model: str | os.PathLike[str], *, device: str | torch.device = "cpu") -> Sam:
    """A model from a name, a known checkpoint filename or a checkpoint path.

    A bare model name ("vit_t") gives random weights; a file gives the model
    its keys describe, with those weights.
    """
    text = os.fspath(model)
    known = known_checkpoints()
    if not os.path.exists(text) and text not in known:
        looks_like_file = Path(text).suffix != "" or os.sep in text
        try:
            get_config(text)
        except UnknownModelError:
            if not looks_like_file:
                raise UnknownModelError(
                    f"unknown model {text!r}: not a model name ({', '.join(MODEL_CONFIGS)}), "
                    f"a known checkpoint ({', '.join(known)}) or an existing file"
                ) from None
        else:
            return build_sam(text, device=device)
    path, state_dict, found = _read_checkpoint(text)
    return _with_weights(get_config(found), state_dict, path, device)


def detect_model_name(state_dict: Mapping[str, torch.Tensor]) -> str:
    """Which of `MODEL_CONFIGS` a state dict belongs to, read off its encoder's shapes.

    TinyViT encoders are told apart by their first stage's width, SAM's ViTs
    by their width, and a ViT's depth must then be its config's.

    Raises:
        CheckpointError: Not a SAM / MobileSAM state dict.
    """
    first_mbconv = state_dict.get("image_encoder.layers.0.blocks.0.conv1.c.weight")  # (hidden, width, 1, 1)
    if first_mbconv is not None:
        for config in MODEL_CONFIGS.values():
            if isinstance(config.encoder, TinyViTConfig) and config.encoder.embed_dims[0] == first_mbconv.shape[1]:
                return config.name
    pos_embed = state_dict.get("image_encoder.pos_embed")  # (1, H/16, W/16, width)
    vits = {c.encoder.embed_dim: c for c in MODEL_CONFIGS.values() if isinstance(c.encoder, ViTConfig)}
    if pos_embed is not None and pos_embed.shape[-1] in vits:
        config = vits[pos_embed.shape[-1]]
        blocks = {int(m.group(1)) for k in state_dict if (m := re.match(r"image_encoder\.blocks\.(\d+)\.", k))}
        if len(blocks) != config.encoder.depth:
            raise CheckpointError(
                f"width {pos_embed.shape[-1]} means {config.name} with {config.encoder.depth} blocks, but the file has {len(blocks)}"
            )
        return config.name
    sample = ", ".join(list(state_dict)[:5])
    raise CheckpointError(f"not a SAM or MobileSAM checkpoint: no image encoder found (first keys: {sample})")


def _read_checkpoint(checkpoint: str | os.PathLike[str]) -> tuple[Path, dict[str, torch.Tensor], str]:
    """Resolve, read and identify a checkpoint: (path, state dict, model name)."""
    path = resolve_checkpoint(checkpoint)
    state_dict = weights.read_state_dict(path)
    return path, state_dict, detect_model_name(state_dict)


def _with_weights(config: ModelConfig, state_dict: dict[str, torch.Tensor], path: Path, device: str | torch.device) -> Sam:
    model = build_from_config(config)
    weights.load_weights(model, state_dict, source=str(path))
    return model.to(device).eval()


def count_parameters(module: torch.nn.Module) -> int:
    """Number of parameters (works on the meta device)."""
    return sum(p.numel() for p in module.parameters())


sam_model_registry = {
    alias: partial(build_sam, config.name)
    for config in MODEL_CONFIGS.values()
    for alias in (config.name, *config.aliases)
}
"""`segment_anything`-style table: `sam_model_registry["vit_t"](checkpoint=path)`."""
