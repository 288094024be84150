"""Second stage: fine-tune the prompt encoder and mask decoder on masks, the image encoder frozen.

SAM's recipe at a smaller scale: per image, some masks; the first prompt is
a noisy box or a point inside the mask (one choice per micro-batch), then
each further round adds a click in the error region of the previous mask
and feeds its logits back as the mask prompt. The loss is SAM's: focal 20 :
dice 1 on the low-res mask logits, plus MSE on the predicted IoU.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from .. import weights
from ..io.datasets import Dataset as MaskDataset
from ..io.datasets import load_dataset
from ..io.images import load_image
from ..modeling import MaskDecoder, PromptEncoder, Sam
from ..registry import checkpoint_model_name, load_from_config
from ..transforms import ResizeLongestSide
from .config import FinetuneConfig, model_config
from .distributed import distributed
from .loop import StepContext, TrainSummary, train
from .losses import sam_loss
from .prompts import corrective_clicks, noisy_box, point_inside

FINAL_MODEL = "mobile_sam.pt"


class PromptDecoder(nn.Module):
    """Prompt encoder + mask decoder as one module, so DistributedDataParallel can wrap the trained part."""

    def __init__(self, prompt_encoder: PromptEncoder, mask_decoder: MaskDecoder) -> None:
        super().__init__()
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder

    def forward(
        self,
        image_embeddings: torch.Tensor,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        boxes: torch.Tensor | None,
        mask_inputs: torch.Tensor | None,
        multimask_output: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, C, h, w) embeddings (one per prompt) and prompts -> low-res logits (N, M, 4h, 4w), IoU predictions (N, M)."""
        sparse, dense = self.prompt_encoder(points=points, boxes=boxes, masks=mask_inputs)
        return self.mask_decoder(
            image_embeddings=image_embeddings,
            image_pe=self.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask_output,
        )


class MaskSampleDataset(Dataset):
    """Per image: the resized image, up to `masks_per_image` masks, their boxes and a point in each.

    Which masks and prompts is drawn from (seed, micro-batch, image), so
    every epoch draws anew and a resumed run draws the same.
    """

    def __init__(
        self, data: MaskDataset, image_size: int, masks_per_image: int, seed: int, box_noise: float, max_box_noise: float
    ) -> None:
        self.images = data.images
        self.transform = ResizeLongestSide(image_size)
        self.image_size = image_size
        self.masks_per_image = masks_per_image
        self.seed = seed
        self.box_noise = box_noise
        self.max_box_noise = max_box_noise

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        index, micro_batch = key
        rng = np.random.default_rng([self.seed, micro_batch, index])
        annotations = self.images[index]
        rgb = load_image(annotations.path)
        resized = self.transform.apply_image(rgb)
        h, w = resized.shape[:2]
        order = rng.permutation(len(annotations.instances))
        targets, boxes, points = [], [], []
        for i in order:
            mask = annotations.instances[i].mask()
            # The mask in the model frame: resized like the image, then padded like `Sam.preprocess`.
            scaled = (
                F.interpolate(torch.from_numpy(mask)[None, None].float(), (h, w), mode="bilinear", align_corners=False)[0, 0]
                > 0.5
            )
            if not scaled.any():
                continue  # too small to survive the resize
            padded = F.pad(scaled.float(), (0, self.image_size - w, 0, self.image_size - h))
            low = self.image_size // 4  # the decoder's low-res mask grid
            targets.append((F.interpolate(padded[None, None], (low, low), mode="area")[0] > 0.5).float())
            boxes.append(noisy_box(scaled.numpy(), rng, self.box_noise, self.max_box_noise))
            points.append(point_inside(scaled.numpy(), rng))
            if len(targets) == self.masks_per_image:
                break
        image = torch.from_numpy(resized).permute(2, 0, 1).contiguous()
        if not targets:
            return {
                "image": image,
                "targets": torch.zeros(0, 1, self.image_size // 4, self.image_size // 4),
                "boxes": torch.zeros(0, 4),
                "points": torch.zeros(0, 2),
            }
        return {
            "image": image,
            "targets": torch.stack(targets),  # (M, 1, S/4, S/4)
            "boxes": torch.from_numpy(np.stack(boxes)).float(),  # (M, 4) XYXY model frame
            "points": torch.from_numpy(np.stack(points)).float(),  # (M, 2) XY model frame
        }


class FinetuneTask:
    """Train the prompt encoder and mask decoder with simulated prompts; the encoder is frozen."""

    columns = ("loss", "focal", "dice", "iou_mse", "iou")
    # Box-only and point-only batches leave some prompt embeddings without gradient.
    find_unused_parameters = True

    def __init__(self, sam: Sam, dataset: MaskSampleDataset, config: FinetuneConfig) -> None:
        self.sam = sam
        self.dataset = dataset
        self.config = config
        self.module = PromptDecoder(sam.prompt_encoder, sam.mask_decoder)
        sam.image_encoder.requires_grad_(False)

    def to(self, device: torch.device) -> None:
        self.sam.to(device)
        self.sam.image_encoder.eval()
        self.module.train()

    def train_batch(self, batch: list[dict[str, torch.Tensor]], step: StepContext) -> dict[str, float]:
        generator = torch.Generator().manual_seed(self.config.seed * 1_000_003 + step.micro_batch)
        use_box = bool(torch.rand(1, generator=generator).item() < self.config.box_prob)
        with torch.no_grad(), step.autocast():
            pixels = torch.stack([self.sam.preprocess(item["image"].to(step.device).float()) for item in batch])
            embeddings = self.sam.image_encoder(pixels).float()  # (B, C, S/16, S/16)
        counts = [len(item["targets"]) for item in batch]
        targets = torch.cat([item["targets"] for item in batch]).to(step.device)  # (N, 1, S/4, S/4)
        if len(targets) == 0:
            # No mask survived; a zero loss keeps every rank's backward in step.
            step.backward(sum(p.sum() * 0 for p in self.module.parameters()))
            return {name: 0.0 for name in self.columns}
        per_prompt = embeddings.repeat_interleave(torch.tensor(counts, device=step.device), dim=0)  # (N, C, S/16, S/16)
        boxes = torch.cat([item["boxes"] for item in batch]).to(step.device) if use_box else None
        coords = None if use_box else torch.cat([item["points"] for item in batch]).to(step.device)[:, None]  # (N, 1, 2)
        labels = None if use_box else torch.ones(len(targets), 1, dtype=torch.int, device=step.device)
        mask_inputs = None
        sums = {name: 0.0 for name in self.columns}
        rounds = self.config.iterations
        for round_index in range(rounds):
            # One point alone is ambiguous: SAM predicts three masks and learns from the best.
            multimask = round_index == 0 and not use_box
            points = (coords, labels) if coords is not None else None
            with _sync_after(step, round_index < rounds - 1), step.autocast():
                logits, iou_predictions = step.model(per_prompt, points, boxes, mask_inputs, multimask)
                loss, parts = sam_loss(logits.float(), iou_predictions, targets)
                step.backward(loss / rounds)
            best = logits.detach().float()[torch.arange(len(targets)), parts["best"]]  # (N, S/4, S/4)
            if round_index < rounds - 1:
                click_xy, click_label = corrective_clicks(best, targets[:, 0], self.sam.img_size, generator)
                coords = click_xy if coords is None else torch.cat([coords, click_xy], dim=1)
                labels = click_label.int() if labels is None else torch.cat([labels, click_label.int()], dim=1)
                mask_inputs = best[:, None]
            sums["loss"] += loss.item() / rounds
            for name in ("focal", "dice", "iou_mse", "iou"):
                sums[name] += parts[name].item() / rounds
        return sums

    def finish(self, run: Path) -> Path:
        return weights.save_checkpoint(self.sam, run / FINAL_MODEL)


def _sync_after(step: StepContext, defer_sync: bool) -> Any:
    """`no_sync` for every round but the last, so gradients are all-reduced once per micro-batch."""
    return step.no_sync() if defer_sync else contextlib.nullcontext()


def finetune_decoder(config: FinetuneConfig, *, resume: bool = False, progress: bool = True) -> TrainSummary:
    """Fine-tune a model's prompt encoder and mask decoder (see the module docstring).

    Raises:
        FileNotFoundError: No data, images or checkpoint.
        DatasetError: The data cannot be read.
        CheckpointError: The checkpoint does not fit the model.
    """
    data = load_dataset(config.data, config.images)
    name = config.model_name or checkpoint_model_name(config.model)
    sam = load_from_config(model_config(name, config.model_overrides, config.image_size), config.model)
    dataset = MaskSampleDataset(
        data, config.image_size, config.masks_per_image, config.seed, config.box_noise, config.max_box_noise
    )
    with distributed(config.device) as ctx:
        return train(FinetuneTask(sam, dataset, config), config, ctx, resume=resume, progress=progress)
