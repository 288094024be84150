"""`evaluate`: run the prompt protocols over a labeled dataset and summarise mask quality.

Each image is embedded once per model; every protocol, and the automatic
generator of ``everything``, runs on that embedding. An image whose file is
missing, unreadable or over `max_pixels`, or whose annotations do not fit it,
is skipped and listed in the report (`ValReport.skipped_images`; the command
line prints them); evaluation fails only when no image is left.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from ..automatic import GENERATOR_DEFAULTS, SamAutomaticMaskGenerator
from ..embedding_store import EmbeddingStore
from ..io.datasets import Dataset, ImageAnnotations, load_dataset
from ..io.images import DEFAULT_MAX_PIXELS, load_image
from ..masks import coco_encode_mask, mask_iou
from ..modeling import Sam
from ..predictor import SamPredictor
from ..prompts import make_prompt
from ..registry import load_sam, model_name
from ..segment import segment_prompts
from .clicks import replay_clicks, simulate_clicks
from .metrics import InstanceScore, match_masks, rle_iou, summarize
from .protocols import Protocol, jitter_box, mask_box, parse_protocols
from .report import ValReport

logger = logging.getLogger(__name__)


def evaluate(
    model: str | os.PathLike[str] | Sam,
    data: str | os.PathLike[str] | Dataset,
    images: str | os.PathLike[str] | None = None,
    protocols: Sequence[str] = ("box", "point"),
    *,
    teacher: str | os.PathLike[str] | Sam | None = None,
    max_images: int | None = None,
    seed: int = 0,
    points_per_side: int = GENERATOR_DEFAULTS.points_per_side,
    pred_iou_thresh: float = GENERATOR_DEFAULTS.pred_iou_thresh,
    stability_score_thresh: float = GENERATOR_DEFAULTS.stability_score_thresh,
    device: str | torch.device = "cpu",
    progress: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    embeddings: str | os.PathLike[str] | EmbeddingStore | None = None,
    backend: str = "auto",
) -> ValReport:
    """Measure how well a model segments the objects of a labeled dataset.

    See `mobilesam.val.protocols` for the exact protocols and
    `mobilesam.io.datasets` for the dataset formats.

    Args:
        model: A checkpoint path, known checkpoint or model name (as `load_sam` takes), or a model.
        data: A COCO instances JSON, an SA-1B JSON or folder of them, a folder of PNG masks, or a `Dataset`.
        images: The images folder (default: the folder of `data`); not with a `Dataset`.
        protocols: Protocol names: "box", "box:JITTER", "point", "clicks:K", "everything".
        teacher: A second model; its masks for the same prompts are the reference of `teacher_miou`.
        max_images: Evaluate only the first N annotated images.
        seed: Seed of the box jitter.
        points_per_side: ``everything``: grid of points per image side.
        pred_iou_thresh: ``everything``: keep generated masks with predicted IoU above this.
        stability_score_thresh: ``everything``: keep generated masks at least this stable.
        device: Where models given by name or path run.
        progress: Show a progress bar on stderr.
        max_pixels: Largest width x height of an image file, checked before it is decoded;
            a larger image is skipped and listed in the report.
        embeddings: An embedding store of `model` (or its folder, `mobilesam embed`): stored
            images skip the model's encoder, the others are embedded and stored.
        backend: The engine of both models, a name of `mobilesam.backends.BACKENDS` or "auto"
            (the fastest whose masks reproduce fp32's); "torch" scores the reference's numerics.

    Returns:
        The report; `ValReport.save` writes it.

    Raises:
        ValueError: A bad protocol or option, annotations that cannot be read, or a store of another model.
        FileNotFoundError: `data` or `images` is missing, or none of the images exists.
    """
    started = time.perf_counter()
    parsed = parse_protocols(protocols)
    if max_images is not None and max_images < 1:
        raise ValueError(f"max_images must be at least 1, got {max_images}")
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be at least 1, got {max_pixels}")
    if isinstance(data, Dataset):
        if images is not None:
            raise ValueError("a Dataset already knows its images folder; leave `images` out")
        dataset = data
    else:
        dataset = load_dataset(data, images)
    selected = dataset.images[:max_images]
    if not any(entry.path.is_file() for entry in selected):
        raise FileNotFoundError(
            f"none of the {len(selected)} annotated images exists, e.g. {selected[0].path}; "
            "give the folder the image file names are relative to (`images`; --images on the command line)"
        )
    student = _Model.load(model, device, backend, embeddings)
    reference = _Model.load(teacher, device, backend) if teacher is not None else None
    wants_everything = any(protocol.kind == "everything" for protocol in parsed)
    if wants_everything:
        for evaluated in (student, reference):
            if evaluated is not None:
                evaluated.add_generator(points_per_side, pred_iou_thresh, stability_score_thresh)

    run = _Run(parsed, seed, max_pixels)
    with tqdm(total=len(selected), unit="img", disable=not progress, dynamic_ncols=True) as bar:
        for image_index, entry in enumerate(selected):
            run.image(image_index, entry, student, reference)
            bar.update()
            bar.set_postfix(objects=run.instances, skipped=len(run.skipped_images), refresh=False)
    if run.instances == 0:
        reasons = "; ".join(f"{path}: {reason}" for path, reason in run.skipped_images[:3]) or "every mask is empty"
        raise ValueError(f"nothing to evaluate in {dataset.source}: {reasons}")
    return ValReport(
        model=student.label,
        teacher=reference.label if reference is not None else None,
        data=str(dataset.source),
        dataset_kind=dataset.kind,
        images=len(selected) - len(run.skipped_images),
        instances=run.instances,
        protocols={p.name: summarize(p.name, run.scores[p.name], per_click=p.kind == "clicks") for p in parsed},
        seed=seed,
        points_per_side=points_per_side if wants_everything else None,
        skipped_images=run.skipped_images,
        skipped_crowd=dataset.skipped_crowd,
        skipped_empty=run.skipped_empty,
        seconds=time.perf_counter() - started,
    )


@dataclass
class _Model:
    """A model under evaluation: its predictor and, for ``everything``, its generator."""

    label: str
    predictor: SamPredictor
    generator: SamAutomaticMaskGenerator | None = None

    @classmethod
    def load(
        cls,
        model: str | os.PathLike[str] | Sam,
        device: str | torch.device,
        backend: str,
        embeddings: str | os.PathLike[str] | EmbeddingStore | None = None,
    ) -> _Model:
        if isinstance(model, Sam):
            return cls(f"{model_name(model)} (in memory)", SamPredictor(model, backend, embeddings))
        return cls(os.fspath(model), SamPredictor(load_sam(model, device=device), backend, embeddings))

    def add_generator(self, points_per_side: int, pred_iou_thresh: float, stability_score_thresh: float) -> None:
        self.generator = SamAutomaticMaskGenerator(
            self.predictor.model,
            points_per_side=points_per_side,
            pred_iou_thresh=pred_iou_thresh,
            stability_score_thresh=stability_score_thresh,
            output_mode="coco_rle",
            backend=self.predictor.backend,
        )


@dataclass
class _Run:
    """Scores gathered image by image."""

    protocols: list[Protocol]
    seed: int
    max_pixels: int
    scores: dict[str, list[InstanceScore]] = field(init=False)
    max_clicks: int = field(init=False)
    instances: int = 0
    skipped_empty: int = 0
    skipped_images: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.scores = {protocol.name: [] for protocol in self.protocols}
        # `point` is the first step of the click simulation: one simulation serves it and every clicks:K.
        self.max_clicks = max((protocol.clicks for protocol in self.protocols), default=0)

    def image(self, image_index: int, entry: ImageAnnotations, student: _Model, teacher: _Model | None) -> None:
        """Score every instance of one image under every protocol."""
        try:
            image = load_image(entry.path, max_pixels=self.max_pixels)
            gts = _ground_truth(entry, image.shape[:2])
        except (OSError, ValueError) as err:
            logger.info("skipped %s: %s", entry.path, err)
            self.skipped_images.append((str(entry.path), str(err)))
            return
        models = [m for m in (student, teacher) if m is not None]
        for model in models:
            model.predictor.set_image(image)
        kept = []
        for instance_index, (instance, gt) in enumerate(zip(entry.instances, gts)):
            area = int(np.count_nonzero(gt))
            if area == 0:
                self.skipped_empty += 1
                continue
            kept.append((instance.category_name, gt, area))
            self._prompted(image, gt, area, instance.category_name, student, teacher, (image_index, instance_index))
        self.instances += len(kept)
        everything = [p for p in self.protocols if p.kind == "everything"]
        if everything and kept:
            scores = _everything_scores(image, kept, student, teacher)
            for protocol in everything:
                self.scores[protocol.name].extend(scores)

    def _prompted(
        self,
        image: np.ndarray,
        gt: np.ndarray,
        area: int,
        category: str,
        student: _Model,
        teacher: _Model | None,
        key: tuple[int, int],
    ) -> None:
        for protocol in self.protocols:
            if protocol.kind == "box":
                box = mask_box(gt)
                if protocol.jitter > 0:
                    box = jitter_box(box, protocol.jitter, gt.shape, np.random.default_rng((self.seed, *key)))
                mask, score = _predict_box(student.predictor, image, box)
                teacher_ious = None
                if teacher is not None:
                    teacher_ious = (mask_iou(mask, _predict_box(teacher.predictor, image, box)[0]),)
                self.scores[protocol.name].append(InstanceScore(category, area, (mask_iou(mask, gt),), score, teacher_ious))
        if self.max_clicks == 0:
            return
        trace = simulate_clicks(student.predictor, image, gt, self.max_clicks)
        ious = [mask_iou(mask, gt) for mask in trace.masks]
        teacher_ious = None
        if teacher is not None:
            teacher_trace = replay_clicks(teacher.predictor, image, trace.clicks)
            teacher_ious = [mask_iou(a, b) for a, b in zip(trace.masks, teacher_trace.masks)]
        for protocol in self.protocols:
            if protocol.clicks:
                steps = min(protocol.clicks, len(ious))
                self.scores[protocol.name].append(
                    InstanceScore(
                        category,
                        area,
                        _padded(ious[:steps], protocol.clicks),
                        trace.scores[steps - 1],
                        _padded(teacher_ious[:steps], protocol.clicks) if teacher_ious is not None else None,
                    )
                )


def _ground_truth(entry: ImageAnnotations, image_hw: tuple[int, ...]) -> list[np.ndarray]:
    """The (H, W) bool masks of an image's instances, checked against the image's size."""
    for instance in entry.instances:
        if (instance.height, instance.width) != tuple(image_hw):
            raise ValueError(
                f"annotation {instance.instance_id} is for a {instance.width}x{instance.height} image, "
                f"but the image is {image_hw[1]}x{image_hw[0]}"
            )
    return [instance.mask() for instance in entry.instances]


def _predict_box(predictor: SamPredictor, image: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, float]:
    results = segment_prompts(predictor, predictor.embedding, [make_prompt(box=box)], image)
    return np.asarray(results.masks)[0], float(results.scores[0])


def _padded(values: Sequence[float], length: int) -> tuple[float, ...]:
    """`values` repeated at the end to `length`: an exact mask keeps its IoU for the clicks it no longer needs."""
    return tuple(values) + (values[-1],) * (length - len(values))


def _everything_scores(
    image: np.ndarray, kept: list[tuple[str, np.ndarray, int]], student: _Model, teacher: _Model | None
) -> list[InstanceScore]:
    """Match each ground truth to the best of each model's generated masks."""
    gt_rles = [coco_encode_mask(gt) for _, gt, _ in kept]
    # The predictors hold this image's embeddings from the prompted protocols.
    records = student.generator.generate(image, embedding=student.predictor.embedding)
    candidates = [record["segmentation"] for record in records]
    best, ious = match_masks(candidates, gt_rles)
    teacher_ious = [None] * len(kept)
    if teacher is not None:
        teacher_records = teacher.generator.generate(image, embedding=teacher.predictor.embedding)
        teacher_candidates = [record["segmentation"] for record in teacher_records]
        teacher_best, _ = match_masks(teacher_candidates, gt_rles)
        teacher_ious = [
            (rle_iou(candidates[s] if s >= 0 else None, teacher_candidates[t] if t >= 0 else None),)
            for s, t in zip(best, teacher_best)
        ]
    return [
        InstanceScore(
            category,
            area,
            (float(iou),),
            records[index]["predicted_iou"] if index >= 0 else None,
            teacher_iou,
        )
        for (category, _, area), index, iou, teacher_iou in zip(kept, best, ious, teacher_ious)
    ]
