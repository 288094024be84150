"""The `mobilesam` command."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import torch
import typer

from . import weights
from .errors import MobileSamError
from .registry import MODEL_CONFIGS, build_from_config, count_parameters, get_config

app = typer.Typer(
    help="Prompt-guided image segmentation with MobileSAM and SAM.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

_state = {"verbose": False}


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Show debug logs and full tracebacks.")) -> None:
    """Prompt-guided image segmentation with MobileSAM and SAM."""
    _state["verbose"] = verbose
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def _fail(err: BaseException) -> None:
    """One line on stderr and exit 1; the traceback only with --verbose."""
    if _state["verbose"]:
        raise err
    typer.echo(f"error: {err}", err=True)
    raise typer.Exit(1)


@app.command()
def models() -> None:
    """List the models: name, parameters, checkpoint and whether it is cached."""
    cache = weights.cache_dir()
    typer.echo(f"{'name':<7} {'encoder':>11} {'total':>12}  {'checkpoint':<22} cached  description")
    for name, config in MODEL_CONFIGS.items():
        with torch.device("meta"):
            model = build_from_config(config)
        cached = "yes" if config.checkpoint and (cache / config.checkpoint).is_file() else "no"
        typer.echo(
            f"{name:<7} {count_parameters(model.image_encoder):>11,} {count_parameters(model):>12,}  "
            f"{config.checkpoint or '-':<22} {cached:<7} {config.description}"
        )
    typer.echo(f"cache: {cache} (set MOBILESAM_HOME to move it)")


@app.command()
def download(
    name: str = typer.Argument(..., help="A model name (vit_t, vit_b, vit_l, vit_h) or checkpoint filename."),
) -> None:
    """Fetch a checkpoint into the cache and check its SHA-256."""
    try:
        filename = name if name in weights.KNOWN_CHECKPOINTS else get_config(name).checkpoint
        if filename is None:
            raise MobileSamError(f"model {name!r} has no published checkpoint")
        path = weights.resolve_checkpoint(filename)
    except (MobileSamError, OSError, ValueError) as err:
        _fail(err)
    typer.echo(str(path))


@app.command()
def info(checkpoint: Path = typer.Argument(..., help="A checkpoint file (.pt, .pth or .safetensors).")) -> None:
    """Describe a checkpoint file: model, tensors, parameters, checksum."""
    try:
        state_dict = weights.read_state_dict(checkpoint)
        model_name = weights.detect_model_name(state_dict)
        digest = weights.sha256_file(checkpoint)
    except (MobileSamError, OSError, ValueError) as err:
        _fail(err)
    known = next((k for k in weights.KNOWN_CHECKPOINTS.values() if k.sha256 == digest), None)
    typer.echo(f"file:       {checkpoint} ({checkpoint.stat().st_size:,} bytes)")
    typer.echo(f"sha256:     {digest}" + (f" (official {known.filename})" if known else ""))
    typer.echo(f"model:      {model_name} ({get_config(model_name).description})")
    typer.echo(f"tensors:    {len(state_dict)}")
    typer.echo(f"parameters: {sum(t.numel() for t in state_dict.values()):,} values")


def run() -> None:
    """Entry point that keeps Ctrl-C quiet."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
