"""Ultralytics' `SAMPredictor` (`ultralytics.models.sam.Predictor`) on `mobilesam.SAM`: set an image once, then prompt it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .api import SAM
from .io.images import ImageSource
from .results import Results

# Ultralytics' segment-everything keywords (its `Predictor.generate`) -> `SamAutomaticMaskGenerator`'s.
_GENERATE_KEYWORDS = {
    "crop_n_layers": "crop_n_layers",
    "crop_overlap_ratio": "crop_overlap_ratio",
    "crop_downscale_factor": "crop_n_points_downscale_factor",
    "point_grids": "point_grids",
    "points_stride": "points_per_side",
    "points_batch_size": "points_per_batch",
    "conf_thres": "pred_iou_thresh",
    "stability_score_thresh": "stability_score_thresh",
    "stability_score_offset": "stability_score_offset",
    "crop_nms_thresh": "crop_nms_thresh",
}


class Predictor:
    """Ultralytics' SAM predictor: `Predictor(overrides=dict(model="mobile_sam.pt", ...))`.

    As in Ultralytics, an array given to `set_image` or as a source is BGR
    (what `cv2.imread` returns); files and URLs are read as they are.

    Args:
        cfg: Ultralytics' default configuration; only `overrides` counts here.
        overrides: Ultralytics' predict settings: "model" (a checkpoint or model name,
            default "mobile_sam.pt"), and the keywords `SAM.predict` takes (conf, device, imgsz, ...).
        _callbacks: Ultralytics' callbacks; SAM runs none.

    Raises:
        TypeError: `_callbacks` were given.
    """

    def __init__(self, cfg: Any = None, overrides: dict[str, Any] | None = None, _callbacks: Any = None) -> None:
        if _callbacks:
            raise TypeError("callbacks are not supported: mobilesam's SAM runs no Ultralytics callbacks")
        self.args = dict(overrides or {})
        self.model = SAM(self.args.pop("model", "mobile_sam.pt"))

    def set_image(self, image: ImageSource) -> None:
        """Embed `image` (a path, URL, PIL image or (H, W, 3) BGR array) for the prompts that follow."""
        self.model.set_image(image, image_format="BGR")

    def reset_image(self) -> None:
        """Forget the image and its embedding."""
        self.model.reset_image()

    def __call__(
        self,
        source: ImageSource | None = None,
        stream: bool = False,
        bboxes: Any = None,
        points: Any = None,
        labels: Any = None,
        multimask_output: bool = False,
        **kwargs: Any,
    ) -> list[Results] | Iterator[Results]:
        """Masks for the prompts on `source`, or on the image of `set_image` without one; no prompts: everything.

        Ultralytics' segment-everything keywords (`points_stride`, `crop_n_layers`,
        `conf_thres`, ...) map to `SamAutomaticMaskGenerator`'s options.
        """
        options = {**self.args, **kwargs}
        for theirs, ours in _GENERATE_KEYWORDS.items():
            if theirs in options:
                options[ours] = options.pop(theirs)
        # Arrays are BGR in Ultralytics; files and URLs are decoded as they are either way.
        options.setdefault("image_format", "BGR")
        return self.model.predict(source, stream, bboxes, points, labels, multimask_output=multimask_output, **options)
