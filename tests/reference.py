"""The oracle: the original MobileSAM code (`mobile_sam`, from mobilesam-mirror), used only in tests."""

from __future__ import annotations

import dataclasses
import warnings

import torch

with warnings.catch_warnings():
    # The reference imports timm through paths timm has since deprecated.
    warnings.simplefilter("ignore")
    import mobile_sam
    from mobile_sam.build_sam import _build_sam as reference_build_vit

from mobilesam.modeling import Sam
from mobilesam.registry import build_from_config, get_config

__all__ = ["mobile_sam", "paired_models", "randomize", "seeded_state_dict", "sync_reference"]


def seeded_state_dict(model: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Random values for every float tensor of `model`, including those initialised to 0 or 1.

    Default initialisation leaves many tensors constant (BatchNorm statistics,
    zero-init biases, relative positions), which would hide wiring mistakes.
    """
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in model.state_dict().items():
        if not value.is_floating_point():
            state[key] = value.clone()
            continue
        noise = torch.randn(value.shape, generator=generator)
        if key.endswith("running_var"):
            value = noise.abs() * 0.1 + 0.5
        elif value.ndim == 1 and key.endswith("weight"):  # norm scales
            value = 1.0 + 0.1 * noise
        elif key.endswith("positional_encoding_gaussian_matrix"):
            value = noise
        else:
            value = 0.1 * noise
        state[key] = value
    return state


def randomize(ours: Sam, seed: int = 0) -> Sam:
    """Load seeded random weights into our model (eval mode)."""
    ours.load_state_dict(seeded_state_dict(ours, seed), strict=True)
    return ours.eval()


def sync_reference(reference: torch.nn.Module, ours: Sam) -> torch.nn.Module:
    """Copy our weights into the reference strictly, then refresh its cached attention biases."""
    reference.load_state_dict(ours.state_dict(), strict=True)
    # The reference TinyViT caches attention biases when switched to eval;
    # switching after the load makes the cache match the new weights.
    return reference.eval()


def paired_models(name: str, seed: int = 0, **encoder_overrides):
    """(ours, reference) with identical random weights; the encoder config may be shrunk."""
    config = get_config(name)
    if encoder_overrides:
        config = dataclasses.replace(config, encoder=dataclasses.replace(config.encoder, **encoder_overrides))
        enc = config.encoder
        reference = reference_build_vit(
            encoder_embed_dim=enc.embed_dim,
            encoder_depth=enc.depth,
            encoder_num_heads=enc.num_heads,
            encoder_global_attn_indexes=list(enc.global_attn_indexes),
        )
    else:
        reference = mobile_sam.sam_model_registry[name]()
    torch.manual_seed(seed)
    ours = randomize(build_from_config(config), seed)
    return ours, sync_reference(reference, ours)
