"""Building the models that training needs from names, encoder overrides and checkpoints."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .. import weights
from ..errors import CheckpointError
from ..modeling import Sam
from ..registry import ModelConfig, build_from_config, resolve_checkpoint
from ..registry import detect_model_name as detect_state_dict_model

# The parts of a SAM checkpoint that distillation takes over from the teacher unchanged.
PROMPT_PARTS = ("prompt_encoder.", "mask_decoder.")


def load_model(config: ModelConfig, checkpoint: str | os.PathLike[str]) -> Sam:
    """`config`'s model with a checkpoint's weights (strict), on the CPU in train mode.

    Args:
        config: The architecture; it may be a registered one with a changed image size or encoder.
        checkpoint: A file path or a known checkpoint filename (downloaded if missing).

    Raises:
        FileNotFoundError: No such checkpoint.
        CheckpointError: The checkpoint does not fit `config`.
    """
    path = resolve_checkpoint(checkpoint)
    model = build_from_config(config)
    weights.load_weights(model, weights.read_state_dict(path), source=str(path))
    return model


def resolve_weights(checkpoint: str | os.PathLike[str]) -> Path:
    """The local path of a checkpoint file or known checkpoint name (downloaded if missing)."""
    return resolve_checkpoint(checkpoint)


def detect_model_name(checkpoint: str | os.PathLike[str]) -> str:
    """The registered model a checkpoint belongs to."""
    return detect_state_dict_model(weights.read_state_dict(resolve_checkpoint(checkpoint)))


def prompt_state(checkpoint: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The prompt encoder and mask decoder tensors of a SAM checkpoint.

    Raises:
        CheckpointError: The checkpoint has none.
    """
    path = resolve_checkpoint(checkpoint)
    state = {k: v for k, v in weights.read_state_dict(path).items() if k.startswith(PROMPT_PARTS)}
    if not state:
        raise CheckpointError(f"{path} has no prompt encoder or mask decoder tensors")
    return state


def assemble_checkpoint(config: ModelConfig, image_encoder: torch.nn.Module, prompt: dict[str, torch.Tensor], path: Path) -> Path:
    """Save a full SAM checkpoint (the `mobile_sam.pt` layout): a trained encoder with a teacher's prompt parts.

    The model is loaded strictly before saving, so the file is known to load.
    """
    model = build_from_config(config)
    state = {f"image_encoder.{k}": v for k, v in image_encoder.state_dict().items()}
    state.update(prompt)
    weights.load_weights(model, state, source="the distilled encoder with the teacher's prompt encoder and decoder")
    return weights.save_checkpoint(model, path)
