"""`mobilesam models`, `download` and `info`: the models and their checkpoints."""

from __future__ import annotations

from pathlib import Path

import torch
import typer

from .. import weights
from ..backends import BACKEND_SPECS
from ..backends.auto import MEASURED_ON, auto_backend_name
from ..cpu import cpu_info
from ..errors import MobileSamError
from ..modeling import count_parameters
from ..registry import (
    MODEL_CONFIGS,
    build_from_config,
    detect_model_name,
    get_config,
    known_checkpoints,
    resolve_checkpoint,
)
from .common import fail


def models() -> None:
    """List the models: name, parameters, checkpoint and whether it is cached."""
    cache = weights.cache_dir()
    typer.echo(f"{'name':<7} {'encoder':>11} {'total':>12}  {'checkpoint':<22} cached  description")
    for name, config in MODEL_CONFIGS.items():
        with torch.device("meta"):
            model = build_from_config(config)
        filename = config.checkpoint.filename if config.checkpoint else None
        cached = "yes" if filename and (cache / filename).is_file() else "no"
        typer.echo(
            f"{name:<7} {count_parameters(model.image_encoder):>11,} {count_parameters(model):>12,}  "
            f"{filename or '-':<22} {cached:<7} {config.description}"
        )
    typer.echo(f"cache: {cache} (set MOBILESAM_HOME to move it)")


def download(
    name: str = typer.Argument(..., help="A model name (vit_t, vit_b, vit_l, vit_h) or checkpoint filename."),
) -> None:
    """Fetch a checkpoint into the cache and check its SHA-256."""
    try:
        checkpoint = known_checkpoints().get(name) or get_config(name).checkpoint
        if checkpoint is None:
            raise MobileSamError(f"model {name!r} has no published checkpoint")
        path = resolve_checkpoint(checkpoint.filename)
    except (MobileSamError, OSError, ValueError) as err:
        fail(err)
    typer.echo(str(path))


def info(checkpoint: Path = typer.Argument(..., help="A checkpoint file (.pt, .pth or .safetensors).")) -> None:
    """Describe a checkpoint file: model, tensors, parameters, checksum."""
    try:
        state_dict = weights.read_state_dict(checkpoint)
        model_name = detect_model_name(state_dict)
        digest = weights.sha256_file(checkpoint)
    except (MobileSamError, OSError, ValueError) as err:
        fail(err)
    known = next((k for k in known_checkpoints().values() if k.sha256 == digest), None)
    typer.echo(f"file:       {checkpoint} ({checkpoint.stat().st_size:,} bytes)")
    typer.echo(f"sha256:     {digest}" + (f" (official {known.filename})" if known else ""))
    typer.echo(f"model:      {model_name} ({get_config(model_name).description})")
    typer.echo(f"tensors:    {len(state_dict)}")
    typer.echo(f"parameters: {sum(t.numel() for t in state_dict.values()):,} values")
    cpu = cpu_info()
    faithful, half = BACKEND_SPECS[auto_backend_name(cpu=cpu)], BACKEND_SPECS[auto_backend_name(cpu=cpu, half=True)]
    typer.echo(f"backend:    auto is {faithful.label} on this machine ({cpu.describe()}; class {cpu.cpu_class})")
    typer.echo(f"            auto with --half is {half.label}")
    measured_on = MEASURED_ON.get(cpu.cpu_class, "none measured: the fp32 engines in the order of the measured classes")
    typer.echo(f"            engine figures for this class: {measured_on}")
