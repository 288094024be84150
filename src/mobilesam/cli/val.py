"""`mobilesam val`: mask quality on labeled data, written as a JSON report and a plot."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import typer

from ..automatic import GENERATOR_DEFAULTS as _DEFAULTS
from ..io.datasets import load_dataset
from ..val import PROTOCOL_SYNTAX, evaluate, parse_protocols, save_report
from .common import (
    BACKEND_OPTION,
    DEVICE_OPTION,
    EMBEDDINGS_OPTION,
    MAX_PIXELS_OPTION,
    MODEL_OPTION,
    QUIET_OPTION,
    THREADS_OPTION,
    UsageError,
    check_backend_options,
    fail,
    load_model,
    open_store,
)


def val(
    data: Path = typer.Option(
        ...,
        "--data",
        "-d",
        help="COCO instances JSON, SA-1B JSON file or folder of them, or a folder of PNG masks <image stem>/<k>.png.",
    ),
    images: Path | None = typer.Option(
        None, "--images", "-i", help="Folder the image file names are relative to (default: the folder of --data)."
    ),
    prompt: list[str] = typer.Option(
        ["box", "point"], "--prompt", help=f"Prompt protocol, repeat or comma-separate: {PROTOCOL_SYNTAX}."
    ),
    teacher: str | None = typer.Option(
        None, "--teacher", "-t", help="Also score the masks against this model's masks for the same prompts."
    ),
    max_images: int | None = typer.Option(None, "--max-images", min=1, help="Evaluate only the first N annotated images."),
    seed: int = typer.Option(0, "--seed", help="Seed of the box jitter (box:JITTER)."),
    points_per_side: int = typer.Option(_DEFAULTS.points_per_side, min=1, help="everything: grid of points per image side."),
    pred_iou_thresh: float = typer.Option(
        _DEFAULTS.pred_iou_thresh, help="everything: keep masks with predicted IoU above this."
    ),
    stability_score_thresh: float = typer.Option(
        _DEFAULTS.stability_score_thresh, help="everything: keep masks with stability score above this."
    ),
    model: str = MODEL_OPTION,
    out: Path = typer.Option(
        Path("val_report.json"), "--out", "-o", help="The JSON report; the IoU-vs-clicks plot goes beside it."
    ),
    quiet: bool = QUIET_OPTION,
    device: str = DEVICE_OPTION,
    threads: int | None = THREADS_OPTION,
    max_pixels: int = MAX_PIXELS_OPTION,
    backend: str = BACKEND_OPTION,
    embeddings: Path | None = EMBEDDINGS_OPTION,
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
        fail(err, code=2)
    try:
        dataset = load_dataset(data, images)
    except (OSError, ValueError) as err:
        fail(err)
    check_backend_options(backend, None)
    sam = load_model(model, device, threads)
    store = open_store(embeddings, sam)
    teacher_sam = load_model(teacher, device, threads) if teacher is not None else None
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
            max_pixels=max_pixels,
            embeddings=store,
            backend=backend,
        )
    except (ImportError, OSError, RuntimeError, ValueError) as err:
        fail(err)
    report = dataclasses.replace(report, model=model, teacher=teacher)
    try:
        written = save_report(report, out)
    except ImportError as err:
        typer.echo(f"warning: no plot: {err}", err=True)
        written = [out]
    except OSError as err:
        fail(err)
    for path, reason in report.skipped_images:
        typer.echo(f"skipped: {path}: {reason}", err=True)
    if not quiet:
        typer.echo(report.table())
        skipped = f", {len(report.skipped_images)} skipped" if report.skipped_images else ""
        typer.echo(
            f"{report.images} images{skipped}, {report.instances} objects; {report.seconds:.1f} s; "
            f"written: {', '.join(str(path) for path in written)}"
        )
