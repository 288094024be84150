"""The `mobilesam` command."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import numpy as np
import torch
import typer

from . import weights
from .automatic import SamAutomaticMaskGenerator
from .backends import BACKENDS, Backend, make_backend
from .errors import MobileSamError
from .export.cli import bench, export
from .io.datasets import load_dataset
from .io.sources import ImageJob, ObjectPrompt, find_jobs
from .io.writers import OUTPUT_FORMATS
from .labeling import RunSummary, Segmenter, label_images, segment_objects
from .modeling import Sam
from .predictor import SamPredictor
from .registry import MODEL_CONFIGS, build_from_config, count_parameters, get_config, load_sam
from .results import Results
from .train.cli import train_app
from .val import PROTOCOL_SYNTAX, evaluate, parse_protocols

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


def _fail(err: BaseException, code: int = 1) -> NoReturn:
    """One line on stderr and exit `code`; the traceback only with --verbose."""
    if _state["verbose"]:
        raise err
    typer.echo(f"error: {err}", err=True)
    raise typer.Exit(code)


class UsageError(ValueError):
    """A command-line argument with the wrong syntax (exit status 2)."""


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


_MODEL_OPTION = typer.Option("mobile_sam.pt", "--model", "-m", help="Checkpoint path, known checkpoint name, or model name (vit_t: random weights).")
_OUT_OPTION = typer.Option(Path("masks_out"), "--out", "-o", help="Output folder.")
_FORMAT_OPTION = typer.Option(
    ["png", "overlay"],
    "--format",
    "-f",
    help=f"Output format, repeat or comma-separate for several: {', '.join(OUTPUT_FORMATS)}.",
)
_OVERWRITE_OPTION = typer.Option(False, "--overwrite", help="Redo images whose outputs already exist.")
_QUIET_OPTION = typer.Option(False, "--quiet", "-q", help="No progress bar or summary (failures are still listed).")
_DEVICE_OPTION = typer.Option("cpu", "--device", help="Torch device: cpu, cuda, cuda:1, mps.")
_THREADS_OPTION = typer.Option(None, "--threads", min=1, help="CPU threads for torch (default: torch's choice).")
_BACKEND_OPTION = typer.Option(
    "torch",
    "--backend",
    help=f"What runs the image encoder: {', '.join(BACKENDS)}. torch-compile is the fastest fp32 one on CPU "
    "(compiles on the first image); torch-bf16 is faster where the CPU has BF16/AMX, its masks ~99.8% equal "
    "to fp32; the onnx ones need --onnx-dir.",
)
# The service decodes on torch, so its backend must be one of torch's.
SERVE_BACKENDS = ("torch", "torch-fast", "torch-bf16", "torch-compile")
_ONNX_DIR_OPTION = typer.Option(None, "--onnx-dir", help="Folder written by `mobilesam export`, for the onnx backends.")


@app.command()
def predict(
    source: str = typer.Argument(..., help="Image file, folder, glob (quote it), or a .json/.csv prompts file."),
    point: list[str] = typer.Option([], "--point", "-p", help="X,Y or X,Y,LABEL (1 foreground, 0 background); repeat for more points on the object."),
    box: list[str] = typer.Option([], "--box", "-b", help="X1,Y1,X2,Y2; repeat for one object per box."),
    multimask: bool = typer.Option(False, "--multimask", help="Three candidate masks per object instead of the best one."),
    model: str = _MODEL_OPTION,
    out: Path = _OUT_OPTION,
    output_format: list[str] = _FORMAT_OPTION,
    overwrite: bool = _OVERWRITE_OPTION,
    quiet: bool = _QUIET_OPTION,
    device: str = _DEVICE_OPTION,
    threads: int | None = _THREADS_OPTION,
    backend: str = _BACKEND_OPTION,
    onnx_dir: Path | None = _ONNX_DIR_OPTION,
) -> None:
    """Segment the objects that points or boxes show, in one image or many.

    The points (with an optional box) describe one object; each further box
    is another object. For different prompts per image, give a prompts file.
    """
    try:
        formats = _parse_formats(output_format)
        objects = _parse_objects(point, box)
        jobs = find_jobs(source, exclude=out)
        if objects is None and any(job.objects is None for job in jobs):
            raise UsageError("predict needs --point or --box (or a prompts file); to segment everything use `mobilesam everything`")
        if objects is not None and any(job.objects is not None for job in jobs):
            raise UsageError("give prompts either in the prompts file or with --point/--box, not both")
    except UsageError as err:
        _fail(err, code=2)
    except (OSError, ValueError) as err:
        _fail(err)
    sam = _load_model(model, device, threads)
    predictor = SamPredictor(sam, _make_backend(backend, sam, onnx_dir, threads))

    def segment(job: ImageJob, image: np.ndarray) -> Results:
        return segment_objects(predictor, image, job.objects or objects, multimask, path=str(job.path))

    _run_batch(jobs, segment, out, formats, overwrite, quiet)


@app.command()
def everything(
    source: str = typer.Argument(..., help="Image file, folder, or glob (quote it)."),
    points_per_side: int = typer.Option(32, min=1, help="Grid of points per image side."),
    points_per_batch: int = typer.Option(64, min=1, help="Prompts decoded together (memory vs speed)."),
    pred_iou_thresh: float = typer.Option(0.88, help="Keep masks with predicted IoU above this."),
    stability_score_thresh: float = typer.Option(0.95, help="Keep masks with stability score above this."),
    box_nms_thresh: float = typer.Option(0.7, help="Box IoU above which the weaker of two masks is dropped."),
    crop_n_layers: int = typer.Option(0, min=0, help="Also segment 4^k crops per layer k (finds small objects)."),
    min_mask_region_area: int = typer.Option(0, min=0, help="Remove holes and islands smaller than this (pixels)."),
    model: str = _MODEL_OPTION,
    out: Path = _OUT_OPTION,
    output_format: list[str] = _FORMAT_OPTION,
    overwrite: bool = _OVERWRITE_OPTION,
    quiet: bool = _QUIET_OPTION,
    device: str = _DEVICE_OPTION,
    threads: int | None = _THREADS_OPTION,
    backend: str = _BACKEND_OPTION,
    onnx_dir: Path | None = _ONNX_DIR_OPTION,
) -> None:
    """Segment everything in one image or many: a grid of point prompts, filtered and de-duplicated."""
    try:
        formats = _parse_formats(output_format)
        jobs = find_jobs(source, exclude=out)
        if any(job.objects is not None for job in jobs):
            raise UsageError("everything takes images, not a prompts file; use `mobilesam predict` for prompts")
    except UsageError as err:
        _fail(err, code=2)
    except (OSError, ValueError) as err:
        _fail(err)
    sam = _load_model(model, device, threads)
    try:
        generator = SamAutomaticMaskGenerator(
            sam,
            points_per_side=points_per_side,
            points_per_batch=points_per_batch,
            pred_iou_thresh=pred_iou_thresh,
            stability_score_thresh=stability_score_thresh,
            box_nms_thresh=box_nms_thresh,
            crop_n_layers=crop_n_layers,
            min_mask_region_area=min_mask_region_area,
            backend=_make_backend(backend, sam, onnx_dir, threads),
        )
    except ValueError as err:
        _fail(err, code=2)

    def segment(job: ImageJob, image: np.ndarray) -> Results:
        return Results.from_mask_records(image, generator.generate(image), path=str(job.path))

    _run_batch(jobs, segment, out, formats, overwrite, quiet)


def _parse_formats(values: list[str]) -> list[str]:
    formats = [name.strip().lower() for value in values for name in value.split(",") if name.strip()]
    unknown = [name for name in formats if name not in OUTPUT_FORMATS]
    if unknown or not formats:
        raise UsageError(f"unknown output format {unknown[0] if unknown else ''!r}; choose from {', '.join(OUTPUT_FORMATS)}")
    return list(dict.fromkeys(formats))


def _parse_objects(points: list[str], boxes: list[str]) -> tuple[ObjectPrompt, ...] | None:
    """--point/--box values as objects: the points (and a single box) make one object; several boxes, one object each."""
    coords = [_parse_numbers(text, "--point", (2, 3), "X,Y or X,Y,LABEL") for text in points]
    corners = [_parse_numbers(text, "--box", (4,), "X1,Y1,X2,Y2") for text in boxes]
    if not coords and not corners:
        return None
    if coords and len(corners) > 1:
        raise UsageError("points with several boxes are ambiguous; use a prompts file to give each box its points")
    point_array = labels = None
    if coords:
        point_array = np.array([c[:2] for c in coords])
        labels = np.array([c[2] if len(c) == 3 else 1.0 for c in coords])
    if len(corners) <= 1:
        return (ObjectPrompt(point_array, labels, np.array(corners[0]) if corners else None),)
    return tuple(ObjectPrompt(box=np.array(c)) for c in corners)


def _parse_numbers(text: str, option: str, lengths: tuple[int, ...], syntax: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in lengths or not np.isfinite(values).all():
        raise UsageError(f"{option} must be {syntax} (numbers, no spaces), got {text!r}")
    return values


def _load_model(model: str, device: str, threads: int | None) -> Sam:
    try:
        torch_device = torch.device(device)
        if torch_device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"--device {device}: CUDA is not available on this machine")
        if threads is not None:
            torch.set_num_threads(threads)
        return load_sam(model, device=torch_device)
    except (MobileSamError, OSError, RuntimeError, ValueError) as err:
        _fail(err)


def _make_backend(name: str, sam: Sam, onnx_dir: Path | None, threads: int | None) -> Backend:
    """The --backend for `sam`; a bad name or a missing export is a usage error (exit 2)."""
    if name not in BACKENDS:
        _fail(UsageError(f"--backend must be one of {', '.join(BACKENDS)}, got {name!r}"), code=2)
    if name.startswith("onnx") and onnx_dir is None:
        _fail(UsageError(f"--backend {name} needs --onnx-dir, the folder written by `mobilesam export`"), code=2)
    try:
        return make_backend(name, sam, onnx_dir=onnx_dir, threads=threads)
    except (OSError, ImportError, ValueError) as err:
        _fail(err)


def _run_batch(jobs: list[ImageJob], segment: Segmenter, out: Path, formats: list[str], overwrite: bool, quiet: bool) -> None:
    """Run, print the summary, list failures; exit 1 if any image failed, 130 when interrupted."""
    try:
        with _sigterm_as_interrupt():
            summary: RunSummary = label_images(jobs, segment, out, formats, overwrite=overwrite, progress=not quiet)
    except KeyboardInterrupt:
        typer.echo("interrupted: finished images are kept; run the same command again to continue", err=True)
        raise typer.Exit(130) from None
    except (OSError, RuntimeError) as err:
        # The output folder is unusable or the model failed (e.g. out of GPU memory): images done so far are kept.
        _fail(err)
    if not quiet:
        typer.echo(f"{summary.describe()}; outputs in {out}")
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


@app.command()
def val(
    data: Path = typer.Option(
        ..., "--data", "-d", help="COCO instances JSON, SA-1B JSON file or folder of them, or a folder of PNG masks <image stem>/<k>.png."
    ),
    images: Path | None = typer.Option(None, "--images", "-i", help="Folder the image file names are relative to (default: the folder of --data)."),
    prompt: list[str] = typer.Option(["box", "point"], "--prompt", help=f"Prompt protocol, repeat or comma-separate: {PROTOCOL_SYNTAX}."),
    teacher: str | None = typer.Option(None, "--teacher", "-t", help="Also score the masks against this model's masks for the same prompts."),
    max_images: int | None = typer.Option(None, "--max-images", min=1, help="Evaluate only the first N annotated images."),
    seed: int = typer.Option(0, "--seed", help="Seed of the box jitter (box:JITTER)."),
    points_per_side: int = typer.Option(32, min=1, help="everything: grid of points per image side."),
    pred_iou_thresh: float = typer.Option(0.88, help="everything: keep masks with predicted IoU above this."),
    stability_score_thresh: float = typer.Option(0.95, help="everything: keep masks with stability score above this."),
    model: str = _MODEL_OPTION,
    out: Path = typer.Option(Path("val_report.json"), "--out", "-o", help="The JSON report; the IoU-vs-clicks plot goes beside it."),
    quiet: bool = _QUIET_OPTION,
    device: str = _DEVICE_OPTION,
    threads: int | None = _THREADS_OPTION,
) -> None:
    """Measure mask quality on labeled data: mIoU per prompt protocol, object size and category.

    Each object is prompted with its ground-truth box, a click at its centre,
    or K simulated corrective clicks, or found among the masks of `everything`;
    the JSON report has the details (see `mobilesam.val.protocols`).
    """
    try:
        parse_protocols(prompt)
        if out.suffix.lower() != ".json":
            raise UsageError(f"--out names the JSON report and must end in .json, got {out}")
    except ValueError as err:
        _fail(err, code=2)
    try:
        dataset = load_dataset(data, images)
    except (OSError, ValueError) as err:
        _fail(err)
    sam = _load_model(model, device, threads)
    teacher_sam = _load_model(teacher, device, threads) if teacher is not None else None
    try:
        report = evaluate(
            sam,
            dataset,
            protocols=prompt,
            teacher=teacher_sam,
            max_images=max_images,
            seed=seed,
            points_per_side=points_per_side,
            pred_iou_thresh=pred_iou_thresh,
            stability_score_thresh=stability_score_thresh,
            progress=not quiet,
        )
    except (OSError, ValueError) as err:
        _fail(err)
    report = dataclasses.replace(report, model=model, teacher=teacher)
    try:
        written = report.save(out)
    except ImportError as err:
        typer.echo(f"warning: no plot: {err}", err=True)
        written = [out]
    except OSError as err:
        _fail(err)
    for path, reason in report.skipped_images:
        typer.echo(f"skipped: {path}: {reason}", err=True)
    if not quiet:
        typer.echo(report.table())
        skipped = f", {len(report.skipped_images)} skipped" if report.skipped_images else ""
        typer.echo(
            f"{report.images} images{skipped}, {report.instances} objects; {report.seconds:.1f} s; "
            f"written: {', '.join(str(path) for path in written)}"
        )


@app.command()
def serve(
    model: str = _MODEL_OPTION,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0 exposes the service to the network)."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="TCP port."),
    cache_mb: float = typer.Option(512.0, "--cache-mb", min=0.0, help="Memory for cached image embeddings (and their files), MiB."),
    queue_size: int = typer.Option(16, "--queue-size", min=1, help="Model jobs that may wait; beyond that requests get 503 + Retry-After."),
    workers: int = typer.Option(1, "--workers", min=1, help="Threads running the model (1 suits a CPU)."),
    max_upload_mb: float = typer.Option(20.0, "--max-upload-mb", min=0.001, help="Largest image file accepted, MiB."),
    max_pixels: int = typer.Option(40_000_000, "--max-pixels", min=1, help="Largest image accepted, width x height."),
    api_key: str | None = typer.Option(None, "--api-key", envvar="MOBILESAM_API_KEY", help="Require this key in the X-API-Key header (prefer the environment variable)."),
    cors_origin: list[str] = typer.Option([], "--cors-origin", help="Allow browser calls from this origin (repeat for more); none by default."),
    device: str = _DEVICE_OPTION,
    threads: int | None = _THREADS_OPTION,
    backend: str = typer.Option(
        "torch", "--backend", help=f"What embeds uploaded images: {', '.join(SERVE_BACKENDS)} (torch-compile is the fastest on CPU)."
    ),
) -> None:
    """Run the HTTP service and the click-to-segment page (http://HOST:PORT/; API docs at /docs)."""
    try:
        import uvicorn

        from .server import ServeSettings, create_app
    except ImportError as err:
        _fail(ImportError(f"serve needs FastAPI and uvicorn: pip install 'mobilesam[serve]' ({err})"))
    try:
        settings = ServeSettings(
            model_name="",
            checkpoint=model,
            cache_bytes=int(cache_mb * 2**20),
            max_upload_bytes=int(max_upload_mb * 2**20),
            max_pixels=max_pixels,
            queue_size=queue_size,
            worker_threads=workers,
            api_key=api_key,
            cors_origins=tuple(cors_origin),
        )
        if backend not in SERVE_BACKENDS:
            raise UsageError(f"--backend must be one of {', '.join(SERVE_BACKENDS)} for serve, got {backend!r}")
    except ValueError as err:
        _fail(err, code=2)
    sam = _load_model(model, device, threads)
    settings = dataclasses.replace(settings, model_name=weights.detect_model_name(sam.state_dict()))
    typer.echo(f"mobilesam: {settings.model_name} on {sam.device}; page at http://{host}:{port}/ , API docs at http://{host}:{port}/docs")
    service = create_app(sam, settings, _make_backend(backend, sam, None, threads))
    uvicorn.run(service, host=host, port=port, log_level="debug" if _state["verbose"] else "info")


app.command()(export)
app.command()(bench)
app.add_typer(train_app, name="train")


def run() -> None:
    """Entry point that keeps Ctrl-C quiet."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
