"""What the commands share: the error exit, the shared options, model and backend loading, the batch runner."""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import torch
import typer

from ..backends import BACKEND_SPECS, BACKENDS, Backend, make_backend, resolve_backend_name
from ..embedding_store import EmbeddingStore
from ..errors import MobileSamError
from ..io.images import DEFAULT_MAX_PIXELS
from ..io.sources import ImageJob
from ..labeling import RunOptions, RunSummary, Segmenter, label_images
from ..modeling import Sam
from ..registry import load_sam
from ..tiling import check_tiling

MODEL_OPTION = typer.Option(
    "mobile_sam.pt", "--model", "-m", help="Checkpoint path, known checkpoint name, or model name (vit_t: seeded random weights)."
)
QUIET_OPTION = typer.Option(False, "--quiet", "-q", help="No progress bar or summary (failures are still listed).")
DEVICE_OPTION = typer.Option("cpu", "--device", help="Torch device: cpu, cuda, cuda:1, mps.")
ONNX_DIR_OPTION = typer.Option(
    None,
    "--onnx-dir",
    help="Folder written by `mobilesam export` for the onnx/openvino backends (default: exported on first use and cached).",
)
BACKEND_OPTION = typer.Option(
    "auto",
    "--backend",
    help=f"What embeds and decodes: auto, {', '.join(BACKENDS)}. auto: the fastest on this CPU whose masks reproduce "
    "fp32's (>= 99.9% of pixels, every mask IoU >= 0.999; `mobilesam info` names it); torch: the reference's bits.",
)
HALF_OPTION = typer.Option(
    False,
    "--half",
    help="Reduced precision (Ultralytics' word): with --backend auto, the fastest bf16/int8 engine measured to keep "
    ">= 99.5% of mask pixels equal to fp32's on this CPU class; where none does, the faithful pick, with a warning.",
)
THREADS_OPTION = typer.Option(None, "--threads", min=1, help="CPU threads for torch (default: torch's choice).")
MAX_PIXELS_OPTION = typer.Option(
    DEFAULT_MAX_PIXELS,
    "--max-pixels",
    min=1,
    help="Largest image file read, width x height, checked before decoding (guards against decompression bombs).",
)

EMBEDDINGS_OPTION = typer.Option(
    None,
    "--embeddings",
    help="An embedding store (`mobilesam embed`): images stored there skip the encoder, new ones are added.",
)

TILE_OPTION = typer.Option(
    None,
    "--tile",
    min=1,
    help="Large images: cut them into windows of N x N pixels, each embedded at full resolution "
    "(1024 is the model's input), instead of shrinking the whole image to the model's input.",
)
HALO_OPTION = typer.Option(
    None,
    "--halo",
    min=0,
    help="With --tile: neighbouring windows overlap by 2 x N pixels (default 0). `everything` keeps an object "
    "that crosses a seam between windows when it is under about 2 x (N - 20) pixels across.",
)

_state = {"verbose": False}


class UsageError(ValueError):
    """A command-line argument with the wrong syntax (exit status 2)."""


def set_verbose(verbose: bool) -> None:
    """Apply --verbose: debug logs, and `fail` re-raises so the traceback shows."""
    _state["verbose"] = verbose
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def is_verbose() -> bool:
    """Whether this run was given --verbose."""
    return _state["verbose"]


def fail(err: BaseException, code: int = 1) -> NoReturn:
    """One line on stderr and exit `code`; the traceback only with --verbose."""
    if is_verbose():
        raise err
    typer.echo(f"error: {err}", err=True)
    raise typer.Exit(code)


def load_model(model: str, device: str, threads: int | None) -> Sam:
    """The --model on the --device, with --threads applied; any failure exits 1."""
    try:
        torch_device = torch.device(device)
        if torch_device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"--device {device}: CUDA is not available on this machine")
        if threads is not None:
            torch.set_num_threads(threads)
        return load_sam(model, device=torch_device)
    except (MobileSamError, OSError, RuntimeError, ValueError) as err:
        fail(err)


def check_backend_options(name: str, onnx_dir: Path | None) -> None:
    """--backend and --onnx-dir, checked before the model loads: a bad name, or a folder for torch, exits 2."""
    if name != "auto" and name not in BACKEND_SPECS:
        fail(UsageError(f"--backend must be auto or one of {', '.join(BACKENDS)}, got {name!r}"), code=2)
    if onnx_dir is not None and name != "auto" and not BACKEND_SPECS[name].needs_export:
        fail(UsageError(f"--onnx-dir is for the onnx/openvino backends; --backend {name} runs torch"), code=2)


def backend_with_half(name: str, half: bool, device: str, onnx_dir: Path | None) -> str:
    """--backend with --half applied, before the model loads: "auto" becomes this machine's reduced-precision
    pick; --half with an fp32 engine's name, or a bad name, exits 2."""
    if not half:
        return name
    check_backend_options(name, onnx_dir)
    try:
        return resolve_backend_name(name, torch.device(device), graphs_only=onnx_dir is not None, half=True)
    except (RuntimeError, ValueError) as err:
        fail(UsageError(str(err)), code=2)


def choose_backend(name: str, sam: Sam, onnx_dir: Path | None, threads: int | None) -> Backend:
    """The --backend for `sam` ("auto": this machine's pick); bad options exit 2, a backend that cannot start exits 1."""
    check_backend_options(name, onnx_dir)
    try:
        return make_backend(name, sam, onnx_dir=onnx_dir, threads=threads)
    except (OSError, ImportError, RuntimeError, ValueError) as err:
        fail(err)


def open_store(root: Path | None, sam: Sam) -> EmbeddingStore | None:
    """The --embeddings store of `sam`, or None without one; another model's store exits 1."""
    if root is None:
        return None
    try:
        return EmbeddingStore(root, sam)
    except (OSError, ValueError) as err:
        fail(err)


def parse_tiling(tile: int | None, halo: int | None) -> tuple[int | None, int]:
    """--tile and --halo as a task's (tile_shape, halo); --halo without --tile, or a halo too large, is a usage error."""
    if tile is None and halo is not None:
        raise UsageError("--halo needs --tile: the halo is how far the tiles overlap")
    try:
        check_tiling(tile, halo or 0)
    except ValueError as err:
        raise UsageError(f"--tile/--halo: {err}") from err
    return tile, halo or 0


def run_batch(jobs: list[ImageJob], segment: Segmenter, out: Path, options: RunOptions, backend: str) -> None:
    """Run, print the summary (naming `backend`), list failures; exit 1 if any image failed, 130 when interrupted.

    An image file over `options.max_pixels` pixels is one of the failures; the others are still done.
    """
    with batch_errors():
        summary = label_images(jobs, segment, out, options)
    report_batch(summary, out, not options.progress, backend)


@contextlib.contextmanager
def batch_errors() -> Iterator[None]:
    """Around a batch run: `kill` stops it as Ctrl-C does (exit 130); an unusable output folder or a failing model exits 1."""
    try:
        with _sigterm_as_interrupt():
            yield
    except KeyboardInterrupt:
        typer.echo("interrupted: finished images are kept; run the same command again to continue", err=True)
        raise typer.Exit(130) from None
    except (OSError, RuntimeError) as err:
        # The output folder is unusable or the model failed (e.g. out of GPU memory): images done so far are kept.
        fail(err)


def report_batch(summary: RunSummary, out: Path, quiet: bool, backend: str) -> None:
    """Print the summary of a batch run (naming `backend`) and list its failures; exit 1 if any image failed."""
    if not quiet:
        typer.echo(f"{summary.describe()}; backend {backend}; outputs in {out}")
    for path, reason in summary.failures:
        typer.echo(f"failed: {path}: {reason}", err=True)
    if summary.failures:
        raise typer.Exit(1)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Let `kill` stop a run the way Ctrl-C does, so temporary files are cleaned up."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
