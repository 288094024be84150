"""Training configurations: one dataclass per command, filled from defaults, a YAML file and flags.

Precedence is defaults < YAML (`--config`) < command-line flags; the resolved
configuration is saved into the run folder so a run can be repeated or resumed.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from ..atomic import write_text_atomic
from ..errors import ConfigError
from ..registry import ModelConfig, get_config

C = TypeVar("C")


@dataclass
class CacheConfig:
    """`mobilesam train cache-teacher`: run the teacher once per image, store its embeddings."""

    images: str = ""
    out: str = ""
    teacher: str = "vit_h"
    teacher_weights: str | None = None  # default: the teacher's published checkpoint
    teacher_overrides: dict[str, Any] = field(default_factory=dict)  # encoder fields, e.g. {depth: 2}
    image_size: int = 1024
    flips: bool = False  # also cache the horizontally flipped image
    shard_size: int = 64
    batch_size: int = 4
    device: str = "auto"


@dataclass
class DistillConfig:
    """`mobilesam train distill`: train the student encoder to reproduce the cached embeddings."""

    cache: str = ""
    out: str = ""
    images: str | None = None  # default: the folder the cache was made from
    student: str = "vit_t"
    student_overrides: dict[str, Any] = field(default_factory=dict)
    teacher_weights: str | None = None  # prompt encoder + decoder of the result; default: the cache's teacher
    epochs: float = 8.0
    steps: int | None = None  # total optimiser steps; overrides epochs
    max_steps: int | None = None  # stop (with a checkpoint) after this step; the schedule still spans `steps`
    batch_size: int = 8  # per process
    accum: int = 1  # micro-batches per optimiser step
    lr: float = 1e-3
    min_lr: float = 1e-5
    weight_decay: float = 0.05
    warmup_steps: int = 500
    precision: str = "auto"  # auto (bf16/fp16 on GPU, fp32 on CPU), fp32, bf16, fp16
    device: str = "auto"
    workers: int = 4
    seed: int = 0
    checkpoint_every: int = 1000
    log_every: int = 10
    tensorboard: bool = True


@dataclass
class FinetuneConfig:
    """`mobilesam train finetune-decoder`: train prompt encoder + mask decoder on masks, encoder frozen."""

    data: str = ""  # SA-1B JSON folder (or COCO JSON / PNG masks, as `mobilesam val` reads)
    out: str = ""
    model: str = ""  # checkpoint to start from, e.g. the distilled mobile_sam.pt
    images: str | None = None
    model_name: str | None = None  # default: detected from the checkpoint
    model_overrides: dict[str, Any] = field(default_factory=dict)
    image_size: int = 1024
    epochs: float = 1.0
    steps: int | None = None
    max_steps: int | None = None
    batch_size: int = 2  # images per process and step
    masks_per_image: int = 16
    iterations: int = 3  # prompt rounds per mask: the first prompt, then corrective clicks
    box_prob: float = 0.5  # chance the first prompt is a box rather than a point
    box_noise: float = 0.1  # std of box corner noise, as a fraction of the box side
    max_box_noise: float = 20.0  # ... capped at this many pixels
    lr: float = 1e-5
    min_lr: float = 1e-6
    weight_decay: float = 0.1
    warmup_steps: int = 100
    precision: str = "auto"
    device: str = "auto"
    workers: int = 2
    seed: int = 0
    checkpoint_every: int = 500
    log_every: int = 10
    tensorboard: bool = True


_REQUIRED = {CacheConfig: ("images", "out"), DistillConfig: ("cache", "out"), FinetuneConfig: ("data", "out", "model")}
_PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def load_config(cls: type[C], path: str | os.PathLike[str] | None = None, **flags: Any) -> C:
    """A configuration from defaults, an optional YAML file, then flags that are not None.

    Raises:
        ConfigError: Unknown keys, a missing required setting, or out-of-range values.
        FileNotFoundError: The YAML file does not exist.
    """
    values: dict[str, Any] = {}
    if path is not None:
        values.update(read_yaml(path))
    values.update({k: v for k, v in flags.items() if v is not None})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        where = f" in {path}" if path is not None else ""
        raise ConfigError(
            f"unknown setting{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}{where}; known: {', '.join(sorted(known))}"
        )
    config = cls(**values)
    _validate(config)
    return config


def _validate(config: Any) -> None:
    for name in _REQUIRED[type(config)]:
        if not getattr(config, name):
            raise ConfigError(
                f"{name.replace('_', '-')} is required (flag --{name.replace('_', '-')} or key {name!r} in the YAML config)"
            )
    for name in (
        "batch_size",
        "accum",
        "shard_size",
        "masks_per_image",
        "iterations",
        "checkpoint_every",
        "log_every",
        "image_size",
    ):
        value = getattr(config, name, 1)
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    for name in ("steps", "max_steps"):
        value = getattr(config, name, None)
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    if getattr(config, "image_size", 16) % 16:
        raise ConfigError(f"image_size must be a multiple of 16, got {config.image_size}")
    if getattr(config, "precision", "auto") not in _PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(_PRECISIONS)}, got {config.precision!r}")


def read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The mapping in a YAML file.

    Raises:
        FileNotFoundError: No such file.
        ConfigError: Not YAML, or not a mapping.
    """
    yaml = _yaml()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from err
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise ConfigError(f"{path} must hold a mapping of settings, found {type(document).__name__}")
    return document


def save_config(config: Any, path: str | os.PathLike[str]) -> Path:
    """Write a configuration as YAML (atomically)."""
    return write_text_atomic(path, _yaml().safe_dump(dataclasses.asdict(config), sort_keys=False))


def model_config(name: str, overrides: dict[str, Any], image_size: int) -> ModelConfig:
    """A registered model's configuration at `image_size`, with encoder fields replaced.

    Raises:
        ConfigError: An override that is not a field of the model's encoder configuration.
    """
    config = get_config(name)
    fields = {f.name for f in dataclasses.fields(config.encoder)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ConfigError(f"{', '.join(unknown)} not settable for {name}'s encoder; known: {', '.join(sorted(fields))}")
    encoder = dataclasses.replace(config.encoder, **{k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()})
    return dataclasses.replace(config, encoder=encoder, image_size=image_size)


def _yaml() -> Any:
    try:
        import yaml
    except ImportError as err:
        raise ImportError(f"training configs need PyYAML: pip install 'mobilesam[train]' ({err})") from err
    return yaml
