"""`mobilesam predict` and `everything`: label images from prompts or from a grid of points."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer

from ..automatic import GENERATOR_DEFAULTS as _DEFAULTS
from ..automatic import GeneratorOptions
from ..detect import DetectorOptions, read_boxes_file
from ..io.sources import ImageJob, find_jobs
from ..io.writers import OUTPUT_FORMATS
from ..labeling import RunOptions
from ..prompts import Prompt, make_prompt
from ..tasks import BoxTask, EverythingTask, LabelingTask, PromptTask, job_segmenter
from .common import (
    BACKEND_OPTION,
    DEVICE_OPTION,
    EMBEDDINGS_OPTION,
    HALF_OPTION,
    HALO_OPTION,
    MAX_PIXELS_OPTION,
    MODEL_OPTION,
    ONNX_DIR_OPTION,
    QUIET_OPTION,
    THREADS_OPTION,
    TILE_OPTION,
    UsageError,
    backend_with_half,
    choose_backend,
    fail,
    load_model,
    open_store,
    parse_tiling,
    run_batch,
)
from .distributed import (
    GPUS_PER_WORKER_OPTION,
    RAY_OPTION,
    THREADS_PER_WORKER_OPTION,
    WORKERS_OPTION,
    check_ray_options,
    find_ray_images,
    run_on_ray,
)

_OUT_OPTION = typer.Option(Path("masks_out"), "--out", "-o", help="Output folder.")
_FORMAT_OPTION = typer.Option(
    ["png", "overlay"],
    "--format",
    "-f",
    help=f"Output format, repeat or comma-separate for several: {', '.join(OUTPUT_FORMATS)}.",
)
_DETECTOR = DetectorOptions()
_OVERWRITE_OPTION = typer.Option(False, "--overwrite", help="Redo images whose outputs already exist.")


def predict(
    source: str = typer.Argument(..., help="Image file, folder, glob (quote it), or a .json/.csv prompts file."),
    point: list[str] = typer.Option(
        [], "--point", "-p", help="X,Y or X,Y,LABEL (1 foreground, 0 background); repeat for more points on the object."
    ),
    box: list[str] = typer.Option([], "--box", "-b", help="X1,Y1,X2,Y2; repeat for one object per box."),
    multimask: bool = typer.Option(False, "--multimask", help="Three candidate masks per object instead of the best one."),
    tile: int | None = TILE_OPTION,
    halo: int | None = HALO_OPTION,
    model: str = MODEL_OPTION,
    out: Path = _OUT_OPTION,
    output_format: list[str] = _FORMAT_OPTION,
    overwrite: bool = _OVERWRITE_OPTION,
    quiet: bool = QUIET_OPTION,
    device: str = DEVICE_OPTION,
    threads: int | None = THREADS_OPTION,
    backend: str = BACKEND_OPTION,
    half: bool = HALF_OPTION,
    onnx_dir: Path | None = ONNX_DIR_OPTION,
    max_pixels: int = MAX_PIXELS_OPTION,
    embeddings: Path | None = EMBEDDINGS_OPTION,
    ray: str | None = RAY_OPTION,
    workers: int | None = WORKERS_OPTION,
    threads_per_worker: int = THREADS_PER_WORKER_OPTION,
    gpus_per_worker: float = GPUS_PER_WORKER_OPTION,
) -> None:
    """Segment the objects that points or boxes show, in one image or many.

    The points (with an optional box) describe one object; each further box
    is another object. For different prompts per image, give a prompts file.
    """
    try:
        formats = _parse_formats(output_format)
        objects = _parse_objects(point, box)
        tiling = parse_tiling(tile, halo)
        check_ray_options(ray, threads, workers, threads_per_worker, gpus_per_worker)
        jobs = find_jobs(source, exclude=out) if ray is None else find_ray_images(source, out)
        if objects is None and any(job.objects is None for job in jobs):
            raise UsageError(
                "predict needs --point or --box (or a prompts file); to segment everything use `mobilesam everything`"
            )
        if objects is not None and any(job.objects is not None for job in jobs):
            raise UsageError("give prompts either in the prompts file or with --point/--box, not both")
    except UsageError as err:
        fail(err, code=2)
    except (OSError, ValueError) as err:
        fail(err)
    run_options = RunOptions(
        formats=tuple(formats),
        overwrite=overwrite,
        progress=not quiet,
        max_pixels=max_pixels,
        model=model,
        backend=backend_with_half(backend, half, device, onnx_dir),
        onnx_dir=onnx_dir,
        device=device,
        threads=threads,
        address=ray,
        workers=workers,
        threads_per_worker=threads_per_worker,
        gpus_per_worker=gpus_per_worker,
        embeddings=embeddings,
    )
    _label(PromptTask(objects, multimask, *tiling), jobs, out, run_options)


def everything(
    source: str = typer.Argument(..., help="Image file, folder, or glob (quote it)."),
    points_per_side: int = typer.Option(_DEFAULTS.points_per_side, min=1, help="Grid of points per image side."),
    points_per_batch: int = typer.Option(_DEFAULTS.points_per_batch, min=1, help="Prompts decoded together (memory vs speed)."),
    pred_iou_thresh: float = typer.Option(_DEFAULTS.pred_iou_thresh, help="Keep masks with predicted IoU above this."),
    stability_score_thresh: float = typer.Option(
        _DEFAULTS.stability_score_thresh, help="Keep masks with stability score above this."
    ),
    box_nms_thresh: float = typer.Option(
        _DEFAULTS.box_nms_thresh, help="Box IoU above which the weaker of two masks is dropped."
    ),
    crop_n_layers: int = typer.Option(
        _DEFAULTS.crop_n_layers, min=0, help="Also segment 4^k crops per layer k (finds small objects)."
    ),
    min_mask_region_area: int = typer.Option(
        _DEFAULTS.min_mask_region_area, min=0, help="Remove holes and islands smaller than this (pixels)."
    ),
    detector: str | None = typer.Option(
        None,
        "--detector",
        help="Box prompts from this Ultralytics YOLO checkpoint or YAML instead of the point grid "
        "(MobileSAMv2; needs mobilesam[detector]).",
    ),
    boxes: Path | None = typer.Option(
        None, "--boxes", help='Box prompts from a JSON file {"image name or stem": [[x1,y1,x2,y2], ...]} instead of the grid.'
    ),
    conf: float = typer.Option(_DETECTOR.conf, help="--detector: smallest detection confidence kept."),
    iou: float = typer.Option(_DETECTOR.iou, help="--detector: the detector's NMS IoU threshold."),
    imgsz: int = typer.Option(_DETECTOR.imgsz, min=32, help="--detector: its input size in pixels."),
    max_det: int = typer.Option(_DETECTOR.max_det, min=1, help="--detector: most boxes per image."),
    classes: list[int] = typer.Option([], "--classes", min=0, help="--detector: keep only this class id; repeat for more."),
    tile: int | None = TILE_OPTION,
    halo: int | None = HALO_OPTION,
    model: str = MODEL_OPTION,
    out: Path = _OUT_OPTION,
    output_format: list[str] = _FORMAT_OPTION,
    overwrite: bool = _OVERWRITE_OPTION,
    quiet: bool = QUIET_OPTION,
    device: str = DEVICE_OPTION,
    threads: int | None = THREADS_OPTION,
    backend: str = BACKEND_OPTION,
    half: bool = HALF_OPTION,
    onnx_dir: Path | None = ONNX_DIR_OPTION,
    max_pixels: int = MAX_PIXELS_OPTION,
    embeddings: Path | None = EMBEDDINGS_OPTION,
    ray: str | None = RAY_OPTION,
    workers: int | None = WORKERS_OPTION,
    threads_per_worker: int = THREADS_PER_WORKER_OPTION,
    gpus_per_worker: float = GPUS_PER_WORKER_OPTION,
) -> None:
    """Segment everything in one image or many: a grid of point prompts, filtered and de-duplicated.

    With --detector or --boxes, each box of a detector or a boxes file is one object instead
    (MobileSAMv2's object-aware prompts); the masks keep the boxes' class ids.
    """
    try:
        formats = _parse_formats(output_format)
        if detector is not None and boxes is not None:
            raise UsageError("give --detector or --boxes, not both")
        tiling = parse_tiling(tile, halo)
        if tile is not None and (detector is not None or boxes is not None):
            raise UsageError(
                f"--tile does not apply to {'--detector' if detector is not None else '--boxes'}: give one or the other"
            )
        box_table = read_boxes_file(boxes) if boxes is not None else None
        check_ray_options(ray, threads, workers, threads_per_worker, gpus_per_worker)
        jobs = find_jobs(source, exclude=out) if ray is None else find_ray_images(source, out)
        if any(job.objects is not None for job in jobs):
            raise UsageError("everything takes images, not a prompts file; use `mobilesam predict` for prompts")
    except UsageError as err:
        fail(err, code=2)
    except (OSError, ValueError) as err:
        fail(err)
    task: LabelingTask
    if detector is not None or box_table is not None:
        detector_options = DetectorOptions(conf, iou, imgsz, max_det, tuple(classes) or None, device)
        task = BoxTask(detector, box_table, detector_options, box_nms_thresh)
    else:
        options = GeneratorOptions(
            points_per_side=points_per_side,
            points_per_batch=points_per_batch,
            pred_iou_thresh=pred_iou_thresh,
            stability_score_thresh=stability_score_thresh,
            box_nms_thresh=box_nms_thresh,
            crop_n_layers=crop_n_layers,
            min_mask_region_area=min_mask_region_area,
        )
        task = EverythingTask(options, *tiling)
    run_options = RunOptions(
        formats=tuple(formats),
        overwrite=overwrite,
        progress=not quiet,
        max_pixels=max_pixels,
        model=model,
        backend=backend_with_half(backend, half, device, onnx_dir),
        onnx_dir=onnx_dir,
        device=device,
        threads=threads,
        address=ray,
        workers=workers,
        threads_per_worker=threads_per_worker,
        gpus_per_worker=gpus_per_worker,
        embeddings=embeddings,
    )
    _label(task, jobs, out, run_options)


def _label(task: LabelingTask, jobs: list[ImageJob], out: Path, options: RunOptions) -> None:
    """Run `task` over `jobs`: on Ray when --ray names a cluster, else here; options the model refuses exit 2."""
    if options.address is not None:
        run_on_ray(jobs, task, out, options)
        return
    sam = load_model(options.model, options.device, options.threads)
    store = open_store(None if options.embeddings is None else Path(options.embeddings), sam)
    chosen = choose_backend(options.backend, sam, options.onnx_dir, options.threads)
    try:
        segment = task.segmenter(sam, chosen, store)
    except ValueError as err:
        fail(err, code=2)
    run_batch(jobs, job_segmenter(segment), out, options, chosen.spec.label)


def _parse_formats(values: list[str]) -> list[str]:
    """--format values, comma-split, lower-cased and de-duplicated in order; an unknown name is a usage error."""
    formats = [name.strip().lower() for value in values for name in value.split(",") if name.strip()]
    unknown = [name for name in formats if name not in OUTPUT_FORMATS]
    if unknown or not formats:
        raise UsageError(f"unknown output format {unknown[0] if unknown else ''!r}; choose from {', '.join(OUTPUT_FORMATS)}")
    return list(dict.fromkeys(formats))


def _parse_objects(points: list[str], boxes: list[str]) -> tuple[Prompt, ...] | None:
    """--point/--box values as checked prompts: the points (and a single box) make one object; several boxes, one each."""
    coords = [_parse_numbers(text, "--point", (2, 3), "X,Y or X,Y,LABEL") for text in points]
    corners = [_parse_numbers(text, "--box", (4,), "X1,Y1,X2,Y2") for text in boxes]
    if not coords and not corners:
        return None
    if coords and len(corners) > 1:
        raise UsageError("points with several boxes are ambiguous; use a prompts file to give each box its points")
    xy = labels = None
    if coords:
        xy = [c[:2] for c in coords]
        labels = [c[2] if len(c) == 3 else 1.0 for c in coords]
    try:
        if len(corners) <= 1:
            return (make_prompt(xy, labels, corners[0] if corners else None),)
        return tuple(make_prompt(box=c) for c in corners)
    except ValueError as err:
        raise UsageError(f"--point/--box: {err}") from err


def _parse_numbers(text: str, option: str, lengths: tuple[int, ...], syntax: str) -> list[float]:
    """One comma-separated option value as finite numbers, as many as one of `lengths`; else a usage error."""
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in lengths or not np.isfinite(values).all():
        raise UsageError(f"{option} must be {syntax} (numbers, no spaces), got {text!r}")
    return values
