"""`SAM`: the one-call interface, shaped like Ultralytics' `SAM(...).predict(...)`.

`SAM.predict` takes every keyword Ultralytics' `SAM.predict` documents for
prediction (`mobilesam.ultralytics_options`). The masks stay the reference's:
no `conf` filter and no letterbox unless asked for.
"""

from __future__ import annotations

import glob
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .automatic import SamAutomaticMaskGenerator
from .backends import make_backend
from .embedding import ImageEmbedding
from .embedding_store import EmbeddingStore
from .io.images import DEFAULT_MAX_PIXELS, ImageSource, load_image, pixels_digest
from .io.sources import find_jobs
from .io.video import VideoFrame, is_video, read_frames
from .modeling import Sam, count_parameters
from .predictor import SamPredictor
from .prompts import Prompt, as_object_prompts, check_in_image
from .registry import load_sam, model_name, weights_file
from .results import Results, warn_ignored
from .segment import segment_prompts
from .tiling import TiledEmbedding, check_tiling, embed_tiles, generate_tiled, segment_tiled
from .ultralytics_options import (
    ULTRALYTICS_APPLIED,
    ULTRALYTICS_IGNORED,
    PredictOptions,
    PredictOutputs,
    torch_device,
)

_URL_PREFIXES = ("http://", "https://", "file://")


class SAM:
    """A MobileSAM or SAM model ready to segment images and videos.

    Args:
        model: A checkpoint path, a known checkpoint filename ("mobile_sam.pt",
            "sam_vit_b_01ec64.pth", ...; fetched into the cache when missing),
            or a model name ("vit_t", ...) for random weights.
        device: Torch device; default CPU.
        backend: What embeds and decodes: "auto" (the fastest engine on this machine whose
            masks reproduce fp32's, `fidelity.FAITHFUL`; `info()` names it), or a name of
            `mobilesam.backends.BACKENDS` ("torch" gives the reference's numerics exactly).
        half: Reduced precision, as in Ultralytics: with "auto", the fastest bf16/int8 engine
            measured within `fidelity.REDUCED` on this CPU class (`predict(half=...)` switches too).
        embeddings: An embedding store's folder (`mobilesam embed`, `mobilesam.EmbeddingStore`):
            images whose pixels are stored there skip the encoder; the others are embedded
            and stored. A store of another model raises `EmbeddingStoreError`.

    Example:
        >>> model = SAM("mobile_sam.pt")
        >>> results = model.predict("photo.jpg", points=[900, 370], labels=[1])
        >>> results[0].masks.shape
        (1, 720, 1280)
    """

    task = "segment"
    """Ultralytics' task name for SAM."""

    def __init__(
        self,
        model: str | os.PathLike[str] = "mobile_sam.pt",
        device: str | torch.device = "cpu",
        backend: str = "auto",
        half: bool = False,
        embeddings: str | os.PathLike[str] | None = None,
    ) -> None:
        self.model: Sam = load_sam(model, device=device)
        self.ckpt_path: Path | None = weights_file(model)
        """The checkpoint the weights came from (Ultralytics' name); None for random weights."""
        self._backend_name = backend
        self._embeddings = None if embeddings is None else EmbeddingStore(embeddings, self.model)
        self._use_backend(half)

    def _use_backend(self, half: bool) -> None:
        self.half = half
        self.backend = make_backend(self._backend_name, self.model, half=half)
        self.predictor = SamPredictor(self.model, self.backend, self._embeddings)
        # The last image's pixel digest and embedding: asking again about it skips the encoder.
        self._kept: tuple[str, ImageEmbedding[torch.Tensor]] | None = None
        # The same for tiles: (digest, tile_shape, halo) and the windows embedded so far.
        self._kept_tiles: tuple[tuple[str, int, int], TiledEmbedding] | None = None
        # The last image read and its path: what a call without a source segments.
        self._last: tuple[np.ndarray, str | None] | None = None

    @property
    def device(self) -> torch.device:
        """The device the model's weights are on."""
        return next(self.model.parameters()).device

    def to(self, device: str | int | torch.device) -> SAM:
        """Move the model to `device` (Ultralytics' forms too: 0 or "0" is "cuda:0") and rebuild its engine."""
        self.model.to(torch_device(device))
        self._use_backend(self.half)
        return self

    def cpu(self) -> SAM:
        """Move the model to the CPU."""
        return self.to("cpu")

    def eval(self) -> SAM:
        """Put the model in inference mode (it is from the start, as in Ultralytics)."""
        self.model.eval()
        return self

    def __call__(
        self,
        source: ImageSource | Sequence[ImageSource] | None = None,
        stream: bool = False,
        bboxes: Any = None,
        points: Any = None,
        labels: Any = None,
        **kwargs: Any,
    ) -> list[Results] | Iterator[Results]:
        return self.predict(source, stream, bboxes, points, labels, **kwargs)

    def predict(
        self,
        source: ImageSource | Sequence[ImageSource] | None = None,
        stream: bool = False,
        bboxes: Any = None,
        points: Any = None,
        labels: Any = None,
        *,
        multimask_output: bool = False,
        image_format: str = "RGB",
        max_pixels: int = DEFAULT_MAX_PIXELS,
        half: bool | None = None,
        tile_shape: int | None = None,
        halo: int = 0,
        **options: Any,
    ) -> list[Results] | Iterator[Results]:
        """Segment the objects the prompts point at, in each image or video frame of `source`.

        The arguments before `*` are Ultralytics' `SAM.predict(source, stream, bboxes, points, labels)`.

        Args:
            source: An image path, `pathlib.Path`, URL, PIL image or (H, W, 3) uint8 array; a folder
                (its images, recursively) or a glob pattern; a video file (`mobilesam.io.video.VIDEO_SUFFIXES`,
                every `vid_stride`-th frame); or a list of these. The same prompts apply to each image.
                None segments the last image this `SAM` read again (Ultralytics would use its own sample
                images), with its kept embedding.
            stream: Return a generator that yields each image's `Results` as it is done.
            points: [x, y] (one object), [[x, y], ...] (one object per point) or
                [[[x, y], ...], ...] (several points per object); pixels of the original image.
            labels: 1 foreground / 0 background, nested like `points` without XY;
                default all foreground.
            bboxes: [x1, y1, x2, y2] or a list of boxes, one object each.
            multimask_output: Three candidate masks per object instead of the best one.
            image_format: "RGB" or "BGR" for array sources (cv2.imread gives BGR).
            max_pixels: Largest width x height of an image file or URL, checked before it is
                decoded (`mobilesam.errors.ImageTooLarge` above it); arrays and PIL images are not checked.
            half: Switch to reduced precision (True) or back to the faithful default (False)
                for this and later calls, as `SAM(half=...)`; None keeps the current choice.
            tile_shape: Large images (ours, not Ultralytics'): cut each image into windows of this many
                pixels, each embedded at full resolution (1024, the model's input, is the natural choice),
                instead of shrinking the whole image to the model's input (`mobilesam.tiling`). Each prompted
                object is decoded on one window; segment everything merges the windows' masks. None: whole images.
            halo: With `tile_shape` (ours): neighbouring windows overlap by 2 * halo pixels; segment
                everything keeps an object across a seam when it is under about 2 * (halo - 20) pixels across.
            **options: Ultralytics' predict keywords, applied as follows (`ULTRALYTICS_IGNORED` lists
                those accepted with a warning):

                - conf: keep only masks scoring above it (default: keep all, the reference's output;
                  Ultralytics' SAM drops those at or under 0.25).
                - iou: segment everything's box NMS threshold (`box_nms_thresh`); ignored with prompts.
                - device: move the model there for this and later calls (as `to`).
                - quantize: 16 or "fp16"/8 or "int8" is `half=True`, 32 or "fp32" is `half=False`.
                - imgsz: must be the model's input size (1024); another size warns and is not used, so the
                  masks stay the reference's.
                - retina_masks: masks are always full resolution, as in Ultralytics' SAM.
                - verbose: print a line per image and the mean speeds (default False).
                - vid_stride: take every n-th video frame.
                - save, save_frames, save_txt (with save_conf), save_crop, project, name, exist_ok: write
                  overlays (.jpg, videos as .avi), YOLO-segmentation labels and crops into
                  project/name (default runs/segment/predict, then predict-2, ... unless exist_ok).
                - show: show each overlay (`Results.show`); show_labels, show_conf, show_boxes, line_width
                  go to `Results.plot`.
                - batch (1), task ("segment"), mode ("predict"): Ultralytics' values for SAM.

                Any other keyword, with no prompt at all, goes to `SamAutomaticMaskGenerator`
                (points_per_side, pred_iou_thresh, ...) to segment everything.

        Returns:
            One `Results` per image or frame: a list, or a generator with `stream`.

        Raises:
            TypeError: A keyword neither Ultralytics nor the mask generator takes (named), or generator
                options with prompts.
            ValueError: Bad prompts, no source with no earlier image, or a bad option value (a halo without
                a tile_shape, or one too large for it).
        """
        check_tiling(tile_shape, halo)
        ultralytics = {key: options.pop(key) for key in list(options) if key in ULTRALYTICS_APPLIED}
        for key in [key for key in options if key in ULTRALYTICS_IGNORED]:
            options.pop(key)
            warn_ignored(key, ULTRALYTICS_IGNORED[key])
        run = PredictOptions.from_keywords(ultralytics, self.model.image_encoder.img_size)
        if run.half is not None:
            half = run.half if half is None else half
        if run.device is not None and torch_device(run.device) != self.device:
            self.to(run.device)
        if half is not None and half != self.half:
            self._use_backend(half)
        if source is None and self._last is None:
            raise ValueError("no source given and no image read before: pass an image, folder, glob or video")
        if points is None and bboxes is None:
            if labels is not None:
                raise ValueError("labels were given without points")
            if multimask_output:
                raise ValueError("multimask_output applies to prompts; segment everything picks masks itself")
            if "output_mode" in options:
                raise TypeError("output_mode is not an option here: Results hold binary masks (see Results.to_dict for RLE)")
            if run.iou is not None:
                options.setdefault("box_nms_thresh", run.iou)
            generator = SamAutomaticMaskGenerator(self.model, backend=self.backend, embeddings=self._embeddings, **options)

            def segment(image: np.ndarray, path: str | None) -> Results:
                if tile_shape is not None:
                    return Results.from_mask_records(image, generate_tiled(generator, image, tile_shape, halo), path=path)
                records = generator.generate(image, embedding=self._embedding_of(image))
                return Results.from_mask_records(image, records, path=path)

        else:
            if options:
                raise TypeError(f"options {sorted(options)} apply only to segment everything (no prompts)")
            if run.iou is not None:
                warn_ignored("iou", "prompted masks go through no NMS")
            prompts = as_object_prompts(points, labels, bboxes)

            def segment(image: np.ndarray, path: str | None) -> Results:
                return self._predict_one(image, path, prompts, multimask_output, tile_shape, halo)

        results = self._run(source, segment, run, image_format, max_pixels)
        return results if stream else list(results)

    def _run(
        self,
        source: ImageSource | Sequence[ImageSource] | None,
        segment: Any,
        run: PredictOptions,
        image_format: str,
        max_pixels: int,
    ) -> Iterator[Results]:
        """Each input's `Results`, timed, filtered by `conf`, written and shown as `run` asks."""
        outputs = PredictOutputs(run)
        totals = dict.fromkeys(("preprocess", "inference", "postprocess"), 0.0)
        seen = 0
        try:
            start = time.perf_counter()
            for number, (image, path, frame) in enumerate(self._inputs(source, image_format, max_pixels, run.vid_stride)):
                loaded = time.perf_counter()
                result = segment(image, path)
                segmented = time.perf_counter()
                if run.conf is not None:
                    result = result[result.scores > run.conf]
                done = time.perf_counter()
                result.speed = {
                    "preprocess": (loaded - start) * 1e3,
                    "inference": (segmented - loaded) * 1e3,
                    "postprocess": (done - segmented) * 1e3,
                }
                for key in totals:
                    totals[key] += result.speed[key]
                seen += 1
                outputs.write(result, number, frame)
                if run.verbose:
                    where = f"frame {frame.index + 1}/{frame.count} " if frame is not None else ""
                    print(
                        f"{number}: {where}{path or 'image'} {image.shape[0]}x{image.shape[1]} {result.verbose()}"
                        f"{result.speed['inference']:.1f}ms"
                    )
                yield result
                start = time.perf_counter()
        finally:
            outputs.close()
        if run.verbose and seen:
            print("Speed: " + ", ".join(f"{totals[key] / seen:.1f}ms {key}" for key in totals) + " per image")
        if outputs.save_dir is not None and run.verbose:
            print(f"Results saved to {outputs.save_dir}")

    def _inputs(
        self, source: ImageSource | Sequence[ImageSource] | None, image_format: str, max_pixels: int, vid_stride: int
    ) -> Iterator[tuple[np.ndarray, str | None, VideoFrame | None]]:
        """(H, W, 3) uint8 RGB images with their path, and the video frame they are, from a predict source."""
        if source is None:
            if self._last is None:
                raise ValueError("no source given and no image read before: pass an image, folder, glob or video")
            yield *self._last, None
            return
        for item in list(source) if isinstance(source, (list, tuple)) else [source]:
            text = os.fspath(item) if isinstance(item, (str, os.PathLike)) else None
            if text is None or text.startswith(_URL_PREFIXES) or os.path.isfile(text) and not is_video(text):
                image = load_image(item, image_format, max_pixels=max_pixels)
                self._last = (image, text)
                yield image, text, None
            elif is_video(text):
                for frame in read_frames(text, vid_stride, max_pixels=max_pixels):
                    self._last = (frame.image, text)
                    yield frame.image, text, frame
            elif os.path.isdir(text) or glob.has_magic(text):
                for job in find_jobs(text):
                    image = load_image(job.path, max_pixels=max_pixels)
                    self._last = (image, os.fspath(job.path))
                    yield image, os.fspath(job.path), None
            else:
                raise FileNotFoundError(f"no such image, video, folder or glob: {text}")

    def _predict_one(
        self,
        image: np.ndarray,
        path: str | None,
        prompts: list[Prompt],
        multimask_output: bool,
        tile_shape: int | None = None,
        halo: int = 0,
    ) -> Results:
        for prompt in prompts:
            check_in_image(prompt, image.shape[:2])
        if tile_shape is not None:
            tiled = self._tiles_of(image, tile_shape, halo, prompts)
            return segment_tiled(self.predictor, tiled, prompts, image, multimask_output=multimask_output, path=path)
        return segment_prompts(
            self.predictor, self._embedding_of(image), prompts, image, multimask_output=multimask_output, path=path
        )

    def set_image(self, source: ImageSource, image_format: str = "RGB", max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        """Read and embed one image now; `predict` without a source then prompts it, the encoder skipped.

        Args:
            source: An image path, URL, PIL image or (H, W, 3) uint8 array.
            image_format: "RGB" or "BGR" for an array (cv2.imread gives BGR).
            max_pixels: Largest width x height of a file or URL, checked before decoding.
        """
        text = os.fspath(source) if isinstance(source, (str, os.PathLike)) else None
        image = load_image(source, image_format, max_pixels=max_pixels)
        self._embedding_of(image)
        self._last = (image, text)

    def reset_image(self) -> None:
        """Forget the last image and its embedding."""
        self._last = None
        self._kept = None
        self._kept_tiles = None

    def _embedding_of(self, image: np.ndarray) -> ImageEmbedding[torch.Tensor]:
        """The embedding of an (H, W, 3) uint8 RGB image: the kept one when these are its pixels."""
        digest = pixels_digest(image)
        if self._kept is None or self._kept[0] != digest:
            self._kept = None  # a failing encoder keeps nothing stale
            self._kept = (digest, self.predictor.embed(image))
        return self._kept[1]

    def _tiles_of(self, image: np.ndarray, tile_shape: int, halo: int, prompts: list[Prompt]) -> TiledEmbedding:
        """The windows of an image that `prompts` need, embedded; those kept from the last call on these pixels reused."""
        key = (pixels_digest(image), tile_shape, halo)
        kept = self._kept_tiles[1] if self._kept_tiles is not None and self._kept_tiles[0] == key else None
        self._kept_tiles = None  # a failing encoder keeps nothing stale
        self._kept_tiles = (key, embed_tiles(self.predictor, image, tile_shape, halo, prompts=prompts, reuse=kept))
        return self._kept_tiles[1]

    def export(
        self,
        format: str = "onnx",
        *,
        half: bool = False,
        int8: bool = False,
        out: str | os.PathLike[str] | None = None,
        **options: Any,
    ) -> str:
        """Export the encoder and decoder for a runtime or client, as Ultralytics' `export` does; returns where.

        Args:
            format: Ultralytics' format names: "onnx", "openvino", "torchscript", "executorch", "tflite",
                "coreml", "ncnn"; the clients' "sam", "anylabeling"; "web", the page as static files
                (`mobilesam.export.FORMATS`).
            half: Also write an fp16 encoder (tflite); Core ML programs compute in fp16 already.
            int8: Also write an int8 encoder (onnx, executorch, tflite).
            out: The folder (or zip) to write; default: the format's (`ExportFormat.out`).
            options: The format's own options (`opset`, `calibration_images`).

        Returns:
            The export folder (or the zip).

        Raises:
            ValueError: Unknown format, or a precision or option the format does not take.
            ImportError: The format's converter is not installed (the message names the extra).
        """
        from .export import export_model

        if half and int8:
            raise ValueError("half and int8 each add one encoder; ask for one of them")
        quantize = "int8" if int8 else "fp16" if half and format != "coreml" else None
        paths = export_model(
            self.model,
            out,
            format=format,
            model_name=model_name(self.model),
            weights=self.ckpt_path,
            quantize=quantize,
            **options,
        )
        return str(paths["bundle"] if "bundle" in paths else next(iter(paths.values())).parent)

    def info(self, detailed: bool = False, verbose: bool = True) -> dict[str, int]:
        """Parameter counts of the model and its parts; printed when `verbose`, with the backend in use.

        Args:
            detailed: Also print one line per parameter tensor: name, shape, mean and standard deviation.
            verbose: Print at all.
        """
        counts = {
            "image_encoder": count_parameters(self.model.image_encoder),
            "prompt_encoder": count_parameters(self.model.prompt_encoder),
            "mask_decoder": count_parameters(self.model.mask_decoder),
            "total": count_parameters(self.model),
        }
        if verbose:
            print(", ".join(f"{name} {count:,}" for name, count in counts.items()) + " parameters")
            print(f"backend {self.backend.spec.label}: {self.backend.spec.summary}")
            if detailed:
                for name, tensor in self.model.named_parameters():
                    values = tensor.detach().float()
                    print(f"{name} {list(tensor.shape)} mean {values.mean():.3g} std {values.std():.3g}")
        return counts
