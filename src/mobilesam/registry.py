"""Model configurations by name, each with its published checkpoint, and the one builder of `Sam` modules.

What differs between kinds of encoder lives in one record per family
(`mobilesam.families`); this module loops over those records. A new model of
a registered family is one `register_model(ModelConfig(...))`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch

from . import weights
from .errors import CheckpointError, UnknownModelError
from .families import FAMILIES, TinyViTConfig, ViTConfig, family_of
from .modeling import MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
from .weights import Checkpoint

__all__ = [
    "MODEL_CONFIGS",
    "ModelConfig",
    "TinyViTConfig",
    "ViTConfig",
    "build_from_config",
    "build_sam",
    "checkpoint_model_name",
    "config_of",
    "detect_model_name",
    "get_config",
    "known_checkpoints",
    "load_from_config",
    "load_sam",
    "model_name",
    "register_model",
    "resolve_checkpoint",
    "sam_model_registry",
]


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to build one named model; what is shared has defaults."""

    name: str
    description: str
    encoder: Any  # an instance of a registered family's config type (`mobilesam.families`)
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

RANDOM_WEIGHTS_SEED = 0
"""The seed of the random weights `load_sam` gives a bare model name."""

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


def register_model(config: ModelConfig) -> None:
    """Add a model to `MODEL_CONFIGS` and `sam_model_registry` under its name and aliases.

    Its encoder's family must be registered first (`mobilesam.families.register_family`).

    Raises:
        ValueError: Its name or an alias is already taken.
        TypeError: Its encoder configuration belongs to no registered family.
    """
    family_of(config.encoder)
    taken = [name for name in (config.name, *config.aliases) if name in sam_model_registry]
    if taken:
        raise ValueError(f"names already registered: {', '.join(map(repr, taken))} (known models: {', '.join(MODEL_CONFIGS)})")
    MODEL_CONFIGS[config.name] = config
    for alias in (config.name, *config.aliases):
        sam_model_registry[alias] = partial(build_sam, config.name)


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
    """A freshly initialised `Sam` (train mode, CPU or the current default device) that carries `config`.

    Raises:
        TypeError: `config.encoder` belongs to no registered family.
    """
    image_encoder = family_of(config.encoder).build_encoder(config.encoder, config)
    grid = config.image_size // config.encoder.patch_size
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
    model = Sam(image_encoder, prompt_encoder, mask_decoder, config.pixel_mean, config.pixel_std)
    model.config = config
    return model


def build_sam(
    name: str | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    *,
    device: str | torch.device = "cpu",
) -> Sam:
    """Build a named model in eval mode, optionally with weights.

    Args:
        name: A registered model name ("vit_t", "vit_b", "vit_l", "vit_h") or alias; None:
            the model the checkpoint holds (so segment_anything's `build_sam(checkpoint=...)`
            works for every model), or "vit_t" without a checkpoint.
        checkpoint: A file path or a known checkpoint filename (fetched into the
            cache if missing); None leaves the weights randomly initialised.
        device: Where the model ends up; weights are always loaded on the CPU first.

    Raises:
        UnknownModelError: Unknown name.
        CheckpointError: The checkpoint is unreadable or belongs to another model.
    """
    named = None if name is None else get_config(name)
    if checkpoint is None:
        return build_from_config(named or get_config("vit_t")).to(device).eval()
    path, state_dict, found = _read_checkpoint(checkpoint)
    config = named or get_config(found)
    if found != config.name:
        raise CheckpointError(f"{path} holds a {found!r} model, not {config.name!r}; use build_sam({found!r}, ...)")
    return _with_weights(config, state_dict, path).to(device).eval()


def weights_file(model: str | os.PathLike[str]) -> Path | None:
    """The checkpoint file `load_sam(model)` reads its weights from (after it has run), or None for random weights."""
    text = os.fspath(model)
    if os.path.exists(text) or text in known_checkpoints():
        return resolve_checkpoint(text, download_missing=False)
    return None


def load_sam(model: str | os.PathLike[str], *, device: str | torch.device = "cpu") -> Sam:
    """A model from a name, a known checkpoint filename or a checkpoint path.

    A bare model name ("vit_t") gives random weights, seeded with
    `RANDOM_WEIGHTS_SEED` so that every process (a rerun, each Ray actor, a
    later session over an embedding store) builds the same model; a file
    gives the model its keys describe, with those weights.
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
            # Seeded on a forked generator: the caller's random stream goes on as if nothing was drawn.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(RANDOM_WEIGHTS_SEED)
                return build_sam(text, device=device)
    path, state_dict, found = _read_checkpoint(text)
    return _with_weights(get_config(found), state_dict, path).to(device).eval()


def detect_model_name(state_dict: Mapping[str, torch.Tensor]) -> str:
    """Which of `MODEL_CONFIGS` a state dict belongs to, read off its encoder's shapes.

    Each registered family in turn recognises its own weights (TinyViT by its
    first stage's width, SAM's ViTs by their width, then the depth must be
    that config's).

    Raises:
        CheckpointError: Not a SAM / MobileSAM state dict, or a family's weights that fit none of its models.
    """
    for family in FAMILIES.values():
        configs = [c for c in MODEL_CONFIGS.values() if type(c.encoder) is family.config_type]
        name = family.recognise(state_dict, configs)
        if name is not None:
            return name
    sample = ", ".join(list(state_dict)[:5])
    raise CheckpointError(f"not a SAM or MobileSAM checkpoint: no image encoder found (first keys: {sample})")


def checkpoint_model_name(checkpoint: str | os.PathLike[str]) -> str:
    """The registered model a checkpoint file (path or known filename, downloaded if missing) belongs to.

    Raises:
        FileNotFoundError: No such checkpoint.
        CheckpointError: Unreadable, or not a registered model's.
    """
    return _read_checkpoint(checkpoint)[2]


def load_from_config(config: ModelConfig, checkpoint: str | os.PathLike[str]) -> Sam:
    """`config`'s model with a checkpoint's weights (strict), on the CPU in train mode.

    Args:
        config: The architecture; it may be a registered one with a changed image size or encoder.
        checkpoint: A file path or a known checkpoint filename (downloaded if missing).

    Raises:
        FileNotFoundError: No such checkpoint.
        CheckpointError: The checkpoint does not fit `config`.
    """
    path = resolve_checkpoint(checkpoint)
    return _with_weights(config, weights.read_state_dict(path), path)


def config_of(model: Sam) -> ModelConfig:
    """The configuration `model` was built from.

    A `Sam` assembled by hand, not by `build_from_config`, carries none: then
    the registered configuration its weights belong to (`detect_model_name`).

    Raises:
        CheckpointError: Built by hand, and its weights are no registered model's.
    """
    if model.config is not None:
        return model.config
    return get_config(detect_model_name(model.state_dict()))


def model_name(model: Sam) -> str:
    """The registered name of `model`'s architecture ("vit_t"), as `config_of` finds it.

    Raises:
        CheckpointError: Built by hand, and its weights are no registered model's.
    """
    return config_of(model).name


def _read_checkpoint(checkpoint: str | os.PathLike[str]) -> tuple[Path, dict[str, torch.Tensor], str]:
    """Resolve, read and identify a checkpoint: (path, state dict, model name)."""
    path = resolve_checkpoint(checkpoint)
    state_dict = weights.read_state_dict(path)
    return path, state_dict, detect_model_name(state_dict)


def _with_weights(config: ModelConfig, state_dict: dict[str, torch.Tensor], path: Path) -> Sam:
    """`config`'s model with `state_dict` loaded strictly, on the CPU in train mode."""
    model = build_from_config(config)
    weights.load_weights(model, state_dict, source=str(path))
    return model


sam_model_registry = {
    alias: partial(build_sam, config.name) for config in MODEL_CONFIGS.values() for alias in (config.name, *config.aliases)
}
"""`segment_anything`-style table: `sam_model_registry["vit_t"](checkpoint=path)`."""
