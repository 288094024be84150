"""`auto_annotate`: Ultralytics' detector-then-SAM labeling of a folder, as a resumable batch run.

Ultralytics' `ultralytics.data.annotator.auto_annotate` with the same signature:
a YOLO detector finds boxes, SAM segments each box, and each image gets a
YOLO-seg label file whose lines start with the detector's class ids. Here the
run is a `mobilesam.labeling` batch run: each file is written atomically, and a
second run skips images already labeled.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .backends import make_backend
from .detect import DetectorOptions
from .io.sources import find_jobs
from .labeling import RunOptions, RunSummary, label_images
from .registry import load_sam
from .tasks import BoxTask, job_segmenter
from .ultralytics_options import torch_device


def auto_annotate(
    data: str | os.PathLike[str],
    det_model: str | os.PathLike[str] = "yolo11x.pt",
    sam_model: str | os.PathLike[str] = "mobile_sam.pt",
    device: str = "",
    conf: float = 0.25,
    iou: float = 0.45,
    imgsz: int = 640,
    max_det: int = 300,
    classes: list[int] | None = None,
    output_dir: str | os.PathLike[str] | None = None,
) -> RunSummary:
    """Label the images under `data` with YOLO-seg polygons: detector boxes segmented by SAM.

    Each image gets `<output_dir>/labels/<stem>.txt` (`mobilesam.io.yolo`): one line
    "class x1 y1 x2 y2 ..." per mask, XY normalised by the image size, class from the
    detector; an image without detections gets an empty file, so that it counts as done.
    Every mask is kept (no NMS beyond the detector's own), as in Ultralytics.

    Args:
        data: A folder of images (searched recursively), an image file or a glob.
        det_model: Ultralytics YOLO checkpoint or YAML (needs `mobilesam[detector]`).
        sam_model: SAM checkpoint path, known checkpoint name or model name.
        device: Torch device for both models ("cpu", "cuda", "0"); "" picks CUDA when available.
        conf: The detector's smallest confidence kept.
        iou: The detector's NMS IoU threshold.
        imgsz: The detector's input size.
        max_det: Most detections per image.
        classes: Keep only these detector class ids; None keeps all.
        output_dir: Where the labels go; default "<data's folder>/<data's name>_auto_annotate_labels".

    Returns:
        What the run did; images that could not be read are in its `failures`.

    Raises:
        ImportError: Ultralytics is not installed.
    """
    data = Path(data)
    out_dir = Path(output_dir) if output_dir else data.parent / f"{data.stem}_auto_annotate_labels"
    if device:
        sam_device = torch_device(device)
    else:
        sam_device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    sam = load_sam(sam_model, device=sam_device)
    detector_options = DetectorOptions(conf, iou, imgsz, max_det, tuple(classes) if classes else None, str(sam_device))
    task = BoxTask(detector=os.fspath(det_model), detector_options=detector_options, box_nms_thresh=None)
    segment = task.segmenter(sam, make_backend("auto", sam))
    options = RunOptions(formats=("yolo",), progress=False, model=os.fspath(sam_model), device=str(sam_device))
    return label_images(find_jobs(data, exclude=out_dir), job_segmenter(segment), out_dir, options)
