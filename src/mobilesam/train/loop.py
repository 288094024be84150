"""The training loop shared by `distill` and `finetune-decoder`.

A `Task` says what is trained and how one micro-batch turns into gradients;
the loop owns everything else: data order, optimiser, schedule, mixed
precision, DistributedDataParallel, logging, checkpoints and resume.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ..atomic import write_text_atomic
from .config import ConfigError, save_config
from .data import BatchPlan, PlanSampler, collate_list
from .distributed import DistContext
from .metrics import MetricsLog
from .optim import autocast, autocast_dtype, build_optimizer, grad_scaler, warmup_cosine
from .state import load_training_state, rng_state, save_training_state, set_rng_state

CHECKPOINT = "last.pt"


@dataclass
class StepContext:
    """What a task needs to process one micro-batch.

    Attributes:
        model: The trained module, wrapped in DistributedDataParallel under torchrun: call it, not the bare module.
        backward: Backpropagates a loss (scaled for fp16 and divided by the accumulation count).
        no_sync: Context for a backward whose gradients must not be all-reduced yet.
        micro_batch: Global micro-batch number, to seed per-batch randomness.
        device: Where the model is.
        autocast: Context for the forward in the run's precision.
    """

    model: torch.nn.Module
    backward: Callable[[torch.Tensor], None]
    no_sync: Callable[[], Any]
    micro_batch: int
    device: torch.device
    autocast: Callable[[], Any]


class Task(Protocol):
    """One training objective."""

    columns: tuple[str, ...]  # the metrics `train_batch` returns, in CSV order
    dataset: Dataset
    module: torch.nn.Module  # the trained part; its state is checkpointed

    def to(self, device: torch.device) -> None:
        """Move every model the task uses to `device` and set train/eval modes."""

    def train_batch(self, batch: list[Any], step: StepContext) -> dict[str, float]:
        """Forward and backward one micro-batch; returns its metrics."""

    def finish(self, run: Path) -> Path:
        """Write the final model file (rank 0 only) and return its path."""


@dataclass(frozen=True)
class TrainSummary:
    """How a training run ended."""

    step: int  # the last optimiser step done
    total_steps: int
    metrics: dict[str, float]  # the last logged values
    model_path: Path | None  # the final model file; None when stopped early by max_steps
    weights_digest: list[str]  # per rank, SHA-256 of the trained parameters


def train(task: Task, config: Any, ctx: DistContext, *, resume: bool = False, progress: bool = True) -> TrainSummary:
    """Run (or continue) a training run in `config.out`.

    Raises:
        ConfigError: The run folder already holds a run and `resume` is False.
        FileNotFoundError: `resume` but no checkpoint.
        CheckpointError: The checkpoint cannot be read.
    """
    run = Path(config.out)
    accum = getattr(config, "accum", 1)
    if not resume and (run / CHECKPOINT).exists():
        raise ConfigError(f"{run} already holds a run; pass --resume to continue it or choose another --out")
    plan = BatchPlan(len(task.dataset), config.batch_size, ctx.world_size, config.seed)
    total = config.steps or max(1, math.ceil(config.epochs * plan.batches_per_epoch / accum))
    stop = min(total, config.max_steps or total)
    task.to(ctx.device)
    module = task.module
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = build_optimizer(params, config.lr, config.weight_decay)
    scheduler = warmup_cosine(optimizer, total, config.warmup_steps, config.lr, config.min_lr)
    dtype = autocast_dtype(config.precision, ctx.device)
    scaler = grad_scaler(ctx.device, dtype)
    step = 0
    if resume:
        state = load_training_state(run / CHECKPOINT)
        module.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        step = int(state["step"])
        if state["total_steps"] != total:
            raise ConfigError(
                f"the run was planned for {state['total_steps']} steps, now {total}: keep steps/epochs/batch size as they were"
            )
    metrics_log = None
    if ctx.is_main:
        save_config(config, run / "config.yaml")
        metrics_log = MetricsLog(
            run,
            ["epoch", "lr", *task.columns, "images_per_s"],
            tensorboard=config.tensorboard,
            resume_step=step if resume else None,
        )
    model: torch.nn.Module = module
    if ctx.world_size > 1:
        device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        model = DistributedDataParallel(
            module, device_ids=device_ids, find_unused_parameters=getattr(task, "find_unused_parameters", False)
        )
    sampler = PlanSampler(plan, ctx.rank, step * accum, stop * accum)
    loader = DataLoader(
        task.dataset,
        batch_sampler=sampler,
        num_workers=config.workers,
        collate_fn=collate_list,
        pin_memory=ctx.device.type == "cuda",
        generator=torch.Generator(),  # keeps the loader from drawing on the global RNG
    )
    no_sync = model.no_sync if isinstance(model, DistributedDataParallel) else contextlib.nullcontext
    last: dict[str, float] = {}
    batches = iter(loader)
    with tqdm(total=stop, initial=step, unit="step", disable=not progress or not ctx.is_main, dynamic_ncols=True) as bar:
        while step < stop:
            started = time.perf_counter()
            sums: dict[str, float] = {}
            images = 0
            for i in range(accum):
                micro_batch = step * accum + i
                batch = next(batches)
                images += len(batch)
                context = StepContext(
                    model=model,
                    backward=lambda loss: scaler.scale(loss / accum).backward(),
                    no_sync=no_sync,
                    micro_batch=micro_batch,
                    device=ctx.device,
                    autocast=lambda: autocast(ctx.device, dtype),
                )
                with contextlib.nullcontext() if i == accum - 1 else no_sync():
                    for name, value in task.train_batch(batch, context).items():
                        sums[name] = sums.get(name, 0.0) + value / accum
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            step += 1
            bar.update(1)
            if step % config.log_every == 0 or step == stop:
                ranks = ctx.gather(sums)
                last = {name: sum(r[name] for r in ranks) / len(ranks) for name in task.columns}
                epoch = plan.position(step * accum - 1)[0]
                speed = images * ctx.world_size / (time.perf_counter() - started)
                bar.set_postfix({name: f"{value:.4g}" for name, value in last.items()})
                if metrics_log is not None:
                    metrics_log.log(step, {"epoch": epoch, "lr": lr, **last, "images_per_s": speed})
            if ctx.is_main and (step % config.checkpoint_every == 0 or step == stop):
                _save(run, module, optimizer, scheduler, scaler, step, total, plan, accum)
    if metrics_log is not None:
        metrics_log.close()
    model_path = task.finish(run) if ctx.is_main and step == total else None
    digests = ctx.gather(parameters_digest(module))
    if ctx.is_main:
        summary = {
            "step": step,
            "total_steps": total,
            "metrics": last,
            "model": str(model_path) if model_path else None,
            "weights_digest": digests,
        }
        write_text_atomic(run / "summary.json", json.dumps(summary, indent=1))
    ctx.barrier()
    return TrainSummary(step, total, last, model_path, digests)


def _save(
    run: Path,
    module: torch.nn.Module,
    optimizer: Any,
    scheduler: Any,
    scaler: Any,
    step: int,
    total: int,
    plan: BatchPlan,
    accum: int,
) -> None:
    epoch, index = plan.position(step * accum)
    state = {
        "model": module.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": rng_state(),
        "step": step,
        "total_steps": total,
        # The next micro-batch to train on; derived from `step`, stored for people reading the file.
        "data": {"epoch": epoch, "index": index, "micro_batch": step * accum},
    }
    save_training_state(state, run / CHECKPOINT)


def parameters_digest(module: torch.nn.Module) -> str:
    """SHA-256 of a module's parameters, to check that ranks agree."""
    digest = hashlib.sha256()
    for name, param in module.named_parameters():
        digest.update(name.encode())
        digest.update(param.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
