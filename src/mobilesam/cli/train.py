"""`mobilesam train ...`: cache-teacher, distill and finetune-decoder.

Every setting can come from a YAML file (`--config`) or a flag; flags win.
Errors follow the main command: one line on stderr, exit 1 (bad usage or
configuration: exit 2). Under `torchrun` only rank 0 prints.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from ..errors import MobileSamError
from .common import fail

train_app = typer.Typer(help="Distil a MobileSAM encoder from a SAM teacher and fine-tune the decoder.", no_args_is_help=True)

_CONFIG = typer.Option(None, "--config", "-c", help="YAML file of settings (keys as the flags, with underscores); flags win.")
_RESUME = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint, exactly.")
_QUIET = typer.Option(False, "--quiet", "-q", help="No progress bar.")
_DEVICE = typer.Option(None, "--device", help="auto (CUDA if available), cpu, cuda, cuda:1.")
_IMAGE_SIZE = typer.Option(
    None, "--image-size", help="Model input side, a multiple of 16 (default 1024; smaller for quick trials)."
)
_STEPS = typer.Option(None, "--steps", help="Total optimiser steps (overrides --epochs).")
_MAX_STEPS = typer.Option(
    None, "--max-steps", help="Stop after this step with a checkpoint; the schedule still spans the whole run."
)
_BATCH = typer.Option(None, "--batch-size", help="Per process.")
_WORKERS = typer.Option(None, "--workers", help="Data-loader worker processes.")
_SEED = typer.Option(None, "--seed")
_LR = typer.Option(None, "--lr", help="Peak learning rate (AdamW).")
_WARMUP = typer.Option(None, "--warmup-steps")
_PRECISION = typer.Option(None, "--precision", help="auto (bf16/fp16 on GPU, fp32 on CPU), fp32, bf16, fp16.")
_CKPT_EVERY = typer.Option(None, "--checkpoint-every", help="Steps between checkpoints (run/last.pt).")
_LOG_EVERY = typer.Option(None, "--log-every", help="Steps between metric rows.")
_TENSORBOARD = typer.Option(None, "--tensorboard/--no-tensorboard", help="Also log to run/tensorboard (default on).")


def _echo(text: str) -> None:
    """Print on rank 0 only, so a `torchrun` job reports once."""
    if os.environ.get("RANK", "0") == "0":
        typer.echo(text)


def _settings(cls: type, config_file: Path | None, resume: bool, out: Path | None, **flags: Any) -> Any:
    """Load a configuration; on resume the run's saved config is the base, less its `max_steps`."""
    # Imported on use: the training stack loads only for `mobilesam train`.
    from ..train.config import load_config, read_yaml

    flags = {k: (str(v) if isinstance(v, Path) else v) for k, v in flags.items()}
    if resume and config_file is None and out is not None and (out / "config.yaml").is_file():
        saved = read_yaml(out / "config.yaml")
        saved.pop("max_steps", None)  # where the interrupted run stopped, not where this one should
        flags = {**saved, **{k: v for k, v in flags.items() if v is not None}}
    flags["out"] = str(out) if out is not None else None
    return load_config(cls, config_file, **flags)


def _run(
    job: Callable[[Any], Any], cls: type, config_file: Path | None, resume: bool, out: Path | None, **flags: Any
) -> tuple[Any, Any]:
    """(settings, job(settings)); a bad configuration exits 2, any other failure 1, each with one line."""
    # Imported on use: the training stack loads only for `mobilesam train`.
    from ..train import ConfigError

    try:
        settings = _settings(cls, config_file, resume, out, **flags)
        return settings, job(settings)
    except ConfigError as err:
        fail(err, code=2)
    except (MobileSamError, OSError, ValueError, ImportError) as err:
        fail(err)


@train_app.command("cache-teacher")
def cache_teacher_command(
    images: Path | None = typer.Option(None, "--images", help="Folder of training images (searched recursively)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Cache folder."),
    teacher: str | None = typer.Option(None, "--teacher", help="Teacher model: vit_h (default), vit_l, vit_b."),
    teacher_weights: Path | None = typer.Option(
        None, "--teacher-weights", help="Teacher checkpoint (default: its published one)."
    ),
    image_size: int | None = _IMAGE_SIZE,
    flips: bool | None = typer.Option(None, "--flips/--no-flips", help="Also cache each image flipped left-right."),
    shard_size: int | None = typer.Option(None, "--shard-size", help="Embeddings per shard file."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Images per teacher forward."),
    device: str | None = _DEVICE,
    config: Path | None = _CONFIG,
    quiet: bool = _QUIET,
) -> None:
    """Run the teacher once per image and store its embeddings as fp16 shards (resumable)."""
    # Imported on use: the training stack loads only for `mobilesam train`.
    from ..train import CacheConfig, cache_teacher

    settings, summary = _run(
        lambda settings: cache_teacher(settings, progress=not quiet),
        CacheConfig,
        config,
        False,
        out,
        images=images,
        teacher=teacher,
        teacher_weights=teacher_weights,
        image_size=image_size,
        flips=flips,
        shard_size=shard_size,
        batch_size=batch_size,
        device=device,
    )
    _echo(
        f"{summary.entries} embeddings in {summary.shards} shards at {settings.out} "
        f"({summary.computed} computed, {summary.entries - summary.computed} already cached, {summary.seconds:.1f} s)"
    )


@train_app.command("distill")
def distill_command(
    cache: Path | None = typer.Option(None, "--cache", help="Teacher cache from `mobilesam train cache-teacher`."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Run folder: config, metrics, checkpoints, mobile_sam.pt."),
    images: Path | None = typer.Option(None, "--images", help="Training images (default: the folder the cache was made from)."),
    student: str | None = typer.Option(None, "--student", help="Student model (default vit_t)."),
    teacher_weights: Path | None = typer.Option(
        None,
        "--teacher-weights",
        help="Where the final model's prompt encoder and decoder come from (default: the cache's teacher).",
    ),
    epochs: float | None = typer.Option(None, "--epochs", help="Passes over the cache (default 8)."),
    steps: int | None = _STEPS,
    max_steps: int | None = _MAX_STEPS,
    batch_size: int | None = _BATCH,
    accum: int | None = typer.Option(None, "--accum", help="Micro-batches per optimiser step (gradient accumulation)."),
    lr: float | None = _LR,
    min_lr: float | None = typer.Option(None, "--min-lr", help="Learning rate at the end of the cosine."),
    weight_decay: float | None = typer.Option(None, "--weight-decay"),
    warmup_steps: int | None = _WARMUP,
    precision: str | None = _PRECISION,
    device: str | None = _DEVICE,
    workers: int | None = _WORKERS,
    seed: int | None = _SEED,
    checkpoint_every: int | None = _CKPT_EVERY,
    log_every: int | None = _LOG_EVERY,
    tensorboard: bool | None = _TENSORBOARD,
    config: Path | None = _CONFIG,
    resume: bool = _RESUME,
    quiet: bool = _QUIET,
) -> None:
    """Train a student encoder to reproduce the cached teacher embeddings (MSE)."""
    # Imported on use: the training stack loads only for `mobilesam train`.
    from ..train import DistillConfig, distill

    _, summary = _run(
        lambda settings: distill(settings, resume=resume, progress=not quiet),
        DistillConfig,
        config,
        resume,
        out,
        cache=cache,
        images=images,
        student=student,
        teacher_weights=teacher_weights,
        epochs=epochs,
        steps=steps,
        max_steps=max_steps,
        batch_size=batch_size,
        accum=accum,
        lr=lr,
        min_lr=min_lr,
        weight_decay=weight_decay,
        warmup_steps=warmup_steps,
        precision=precision,
        device=device,
        workers=workers,
        seed=seed,
        checkpoint_every=checkpoint_every,
        log_every=log_every,
        tensorboard=tensorboard,
    )
    _report(summary)


@train_app.command("finetune-decoder")
def finetune_command(
    data: Path | None = typer.Option(
        None, "--data", help="SA-1B JSON folder (or COCO JSON / PNG masks, as `mobilesam val` reads)."
    ),
    model: str | None = typer.Option(None, "--model", "-m", help="Checkpoint to start from, e.g. a distilled mobile_sam.pt."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Run folder."),
    images: Path | None = typer.Option(None, "--images", help="Image folder (default: the data's folder)."),
    model_name: str | None = typer.Option(None, "--model-name", help="Architecture of --model (default: detected)."),
    image_size: int | None = _IMAGE_SIZE,
    epochs: float | None = typer.Option(None, "--epochs", help="Passes over the images (default 1)."),
    steps: int | None = _STEPS,
    max_steps: int | None = _MAX_STEPS,
    batch_size: int | None = typer.Option(None, "--batch-size", help="Images per process and step."),
    masks_per_image: int | None = typer.Option(None, "--masks-per-image", help="Masks sampled per image and step."),
    iterations: int | None = typer.Option(
        None, "--iterations", help="Prompt rounds per mask: first prompt, then corrective clicks."
    ),
    lr: float | None = _LR,
    warmup_steps: int | None = _WARMUP,
    precision: str | None = _PRECISION,
    device: str | None = _DEVICE,
    workers: int | None = _WORKERS,
    seed: int | None = _SEED,
    checkpoint_every: int | None = _CKPT_EVERY,
    log_every: int | None = _LOG_EVERY,
    tensorboard: bool | None = _TENSORBOARD,
    config: Path | None = _CONFIG,
    resume: bool = _RESUME,
    quiet: bool = _QUIET,
) -> None:
    """Fine-tune the prompt encoder and mask decoder on masks with simulated prompts; the encoder stays frozen."""
    # Imported on use: the training stack loads only for `mobilesam train`.
    from ..train import FinetuneConfig, finetune_decoder

    _, summary = _run(
        lambda settings: finetune_decoder(settings, resume=resume, progress=not quiet),
        FinetuneConfig,
        config,
        resume,
        out,
        data=data,
        model=model,
        images=images,
        model_name=model_name,
        image_size=image_size,
        epochs=epochs,
        steps=steps,
        max_steps=max_steps,
        batch_size=batch_size,
        masks_per_image=masks_per_image,
        iterations=iterations,
        lr=lr,
        warmup_steps=warmup_steps,
        precision=precision,
        device=device,
        workers=workers,
        seed=seed,
        checkpoint_every=checkpoint_every,
        log_every=log_every,
        tensorboard=tensorboard,
    )
    _report(summary)


def _report(summary: Any) -> None:
    """The last step's metrics and where the model went (or how to continue)."""
    values = " ".join(f"{name} {value:.4g}" for name, value in summary.metrics.items())
    where = f"model: {summary.model_path}" if summary.model_path else "stopped early; continue with --resume"
    _echo(f"step {summary.step}/{summary.total_steps} {values}; {where}")
