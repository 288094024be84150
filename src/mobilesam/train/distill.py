"""Decoupled distillation (MobileSAM): a student encoder learns the cached teacher embeddings.

The loss is the mean squared error between student and teacher embeddings;
the cosine similarity of the two (per embedding pixel, over channels) is
logged beside it. The final model is the student encoder with the teacher's
prompt encoder and mask decoder, saved in the `mobile_sam.pt` layout.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .. import weights
from ..errors import CheckpointError
from ..modeling import Sam
from ..registry import ModelConfig, build_from_config, resolve_checkpoint
from ..transforms import ResizeLongestSide
from .cache import TeacherCache, model_input
from .config import ConfigError, DistillConfig, model_config
from .distributed import distributed
from .loop import StepContext, TrainSummary, train

FINAL_MODEL = "mobile_sam.pt"
# The parts of a SAM checkpoint that distillation takes over from the teacher unchanged.
PROMPT_PARTS = ("prompt_encoder.", "mask_decoder.")


class EmbeddingDataset(Dataset):
    """Cache entries as (image before preprocessing, teacher embedding) pairs.

    Args:
        cache: The teacher cache.
        images_root: The folder the cache's image paths are relative to.
        image_size: The model input size (the cache's).
    """

    def __init__(self, cache: TeacherCache, images_root: Path, image_size: int) -> None:
        self.cache = cache
        self.root = images_root
        self.transform = ResizeLongestSide(image_size)

    def __len__(self) -> int:
        return len(self.cache)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        index, _ = key
        entry = self.cache.entries[index]
        return model_input(self.root / entry.image, entry.flipped, self.transform), self.cache.embedding(index)


class DistillTask:
    """Train `student.image_encoder` to reproduce teacher embeddings (MSE)."""

    columns = ("mse", "cosine")

    def __init__(self, student: Sam, dataset: EmbeddingDataset, config: ModelConfig, prompt: dict[str, torch.Tensor]) -> None:
        self.student = student
        self.dataset = dataset
        self.module = student.image_encoder
        self.config = config
        self.prompt = prompt
        # TinyViT keeps its ImageNet classifier for checkpoint compatibility; it gets no gradient.
        for name, param in self.module.named_parameters():
            if name.startswith(("head.", "norm_head.")):
                param.requires_grad_(False)

    def to(self, device: torch.device) -> None:
        self.student.to(device)
        self.module.train()

    def train_batch(self, batch: list[tuple[torch.Tensor, torch.Tensor]], step: StepContext) -> dict[str, float]:
        pixels = torch.stack([self.student.preprocess(image.to(step.device).float()) for image, _ in batch])
        targets = torch.stack([embedding for _, embedding in batch]).to(step.device)  # (B, C, S/16, S/16)
        with step.autocast():
            predicted = step.model(pixels)
        predicted = predicted.float()
        loss = F.mse_loss(predicted, targets)
        step.backward(loss)
        cosine = F.cosine_similarity(predicted.detach(), targets, dim=1).mean()
        return {"mse": loss.item(), "cosine": cosine.item()}

    def finish(self, run: Path) -> Path:
        return assemble_checkpoint(self.config, self.module, self.prompt, run / FINAL_MODEL)


def distill(config: DistillConfig, *, resume: bool = False, progress: bool = True) -> TrainSummary:
    """Distil a student encoder from a teacher cache (see the module docstring).

    Args:
        config: The run's settings; `config.out` is the run folder.
        resume: Continue from `out/last.pt` exactly where it stopped.
        progress: Show a progress bar (rank 0).

    Raises:
        FileNotFoundError: No finished cache, images or teacher checkpoint.
        ConfigError: The student's output does not match the cached embeddings, or the run folder is taken.
    """
    cache = TeacherCache(config.cache)
    image_size = int(cache.meta["image_size"])
    images_root = Path(config.images or cache.meta["images_root"])
    if not images_root.is_dir():
        raise FileNotFoundError(f"images folder not found: {images_root} (pass --images)")
    student_config = model_config(config.student, config.student_overrides, image_size)
    _check_shapes(student_config, cache)
    teacher_weights = config.teacher_weights or cache.meta["teacher_weights"]
    prompt = prompt_state(teacher_weights)
    torch.manual_seed(config.seed)
    student = build_from_config(student_config)
    dataset = EmbeddingDataset(cache, images_root, image_size)
    with distributed(config.device) as ctx:
        return train(DistillTask(student, dataset, student_config, prompt), config, ctx, resume=resume, progress=progress)


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


def _check_shapes(config: ModelConfig, cache: TeacherCache) -> None:
    expected = tuple(cache.embedding(0).shape)
    grid = config.image_size // config.encoder.patch_size
    found = (config.prompt_embed_dim, grid, grid)
    if found != expected:
        raise ConfigError(
            f"the student's embeddings are {found} but the cached teacher's are {expected}; student and teacher must match"
        )
