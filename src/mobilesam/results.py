"""`Results`: the masks of one image with their boxes, scores and prompts (Ultralytics style).

`Results.masks` and `Results.boxes` are `Masks` and `Boxes`: Ultralytics' attributes
(`masks.data`, `masks.xy`, `boxes.xyxy`, `boxes.conf`, ...; see
https://docs.ultralytics.com/modes/predict/#working-with-results) over plain arrays,
which they also behave as: an (N, H, W) bool array and an (N, 4) XYXY array.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from .atomic import atomic_path, write_text_atomic
from .draw import draw_overlay
from .masks import batched_mask_to_box, encode_masks, join_outlines, mask_to_polygons

if TYPE_CHECKING:
    from typing_extensions import Self

SPEED_KEYS = ("preprocess", "inference", "postprocess")
"""The stages of `Results.speed`, in milliseconds, as Ultralytics names them."""

# Ultralytics' `Results.plot` options that draw what SAM's overlay has not: why each is ignored.
_PLOT_IGNORED = {
    "conf": "the overlay draws no text (scores are in Results.boxes.conf)",
    "labels": "the overlay draws no text labels (SAM's masks have no class)",
    "boxes": "the overlay draws the prompts' boxes, not boxes around the masks (see Results.boxes)",
    "line_width": "the overlay's outlines have one width",
    "font_size": "the overlay draws no text",
    "font": "the overlay draws no text",
    "probs": "SAM gives no class probabilities",
    "kpt_radius": "SAM gives no keypoints",
    "kpt_line": "SAM gives no keypoints",
    "color_mode": "each mask has its own colour (mobilesam.draw.PALETTE)",
    "txt_color": "the overlay draws no text",
}


def increment_path(path: str | os.PathLike[str]) -> Path:
    """`path` if it is free, else the first free of "<stem>-2<suffix>", "-3", ... (Ultralytics' `increment_path`)."""
    path = Path(path)
    if not path.exists():
        return path
    base, suffix = (path.with_suffix(""), path.suffix) if path.is_file() else (path, "")
    number = 2
    while Path(f"{base}-{number}{suffix}").exists():
        number += 1
    return Path(f"{base}-{number}{suffix}")


def warn_ignored(keyword: str, why: str, stacklevel: int = 3) -> None:
    """One `UserWarning` saying why an Ultralytics keyword is accepted but changes nothing here.

    The message depends only on the keyword, so Python's default filter shows it once.
    """
    warnings.warn(f"{keyword} is accepted for Ultralytics compatibility and ignored: {why}", UserWarning, stacklevel)


def _picks_rows(index: Any) -> bool:
    """Whether `array[index]` selects whole rows (a slice, an index list, a boolean mask), not one item or a part."""
    if isinstance(index, (int, np.integer, tuple)):
        return False
    return not (isinstance(index, (np.ndarray, torch.Tensor)) and index.ndim == 0)


def _numpy_index(index: Any) -> Any:
    return index.cpu().numpy() if isinstance(index, torch.Tensor) else index


def _to_numpy(values: Any, dtype: Any = None) -> np.ndarray:
    """An array of `values` (a tensor on any device, an array, a list), without a copy when it already is one."""
    return np.asarray(values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else values, dtype=dtype)


class _MaskRows:
    """What `Masks` and `Boxes` share: one row per mask, kept as numpy arrays, behaving as the first of them.

    Attributes are tensors sharing the arrays' memory until `numpy()`, as in
    Ultralytics. An int index gives that row of the first array; an index that
    picks rows (slice, list, boolean) gives an object of the same class with
    those rows of every array.

    Args:
        rows: The arrays, one row per mask, in the order the subclass's constructor takes them.
        orig_shape: (H, W) of the image.
        as_numpy: Whether attributes are numpy arrays rather than tensors.
    """

    def __init__(self, rows: tuple[np.ndarray, ...], orig_shape: tuple[int, int], as_numpy: bool) -> None:
        self._rows = rows
        self.orig_shape = (int(orig_shape[0]), int(orig_shape[1]))
        self._as_numpy = as_numpy
        # `to(...)`'s arguments, applied to every tensor handed out; the rows stay numpy on the host.
        self._move: tuple[tuple, dict] | None = None

    def _out(self, array: np.ndarray) -> torch.Tensor | np.ndarray:
        if self._as_numpy:
            return array
        tensor = torch.from_numpy(array)
        return tensor if self._move is None else tensor.to(*self._move[0], **self._move[1])

    def _with_rows(self, rows: tuple[np.ndarray, ...], as_numpy: bool) -> Self:
        # Subclasses take their row arrays first, then orig_shape and as_numpy.
        return type(self)(*rows, self.orig_shape, as_numpy)

    @property
    def shape(self) -> tuple[int, ...]:
        return self._rows[0].shape

    @property
    def dtype(self) -> np.dtype:
        return self._rows[0].dtype

    def cpu(self) -> Self:
        """A copy whose attributes are CPU tensors."""
        return self._with_rows(tuple(array.copy() for array in self._rows), as_numpy=False)

    def numpy(self) -> Self:
        """A copy whose attributes are numpy arrays."""
        return self._with_rows(tuple(array.copy() for array in self._rows), as_numpy=True)

    def to(self, *args: Any, **kwargs: Any) -> Self:
        """A copy whose attributes are tensors moved by `torch.Tensor.to(*args, **kwargs)` (a device, a dtype)."""
        moved = self._with_rows(tuple(array.copy() for array in self._rows), as_numpy=False)
        moved._move = (args, kwargs)
        return moved

    def cuda(self) -> Self:
        """A copy whose attributes are tensors on the current CUDA device."""
        return self.to("cuda")

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        return np.array(self._rows[0], dtype=dtype, copy=copy)

    def __len__(self) -> int:
        return len(self._rows[0])

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter(self._rows[0])

    def __getitem__(self, index: Any) -> Self | np.ndarray:
        rows = _numpy_index(index)
        if _picks_rows(index):
            picked = self._with_rows(tuple(array[rows] for array in self._rows), self._as_numpy)
            picked._move = self._move
            return picked
        return self._rows[0][rows]


class Masks(_MaskRows):
    """The masks of one image as Ultralytics' `Masks`, and as the (N, H, W) bool array itself.

    Ultralytics' attributes give tensors (`data`) until `numpy()` is called, as
    there. Used as an array (`np.asarray`, iteration, `len`, `shape`, `dtype`)
    it is the (N, H, W) bool masks; an int index gives one (H, W) mask array,
    an index that picks rows (slice, list, boolean) gives a `Masks` of those.

    Args:
        masks: (N, H, W) bool masks in the image's pixels.
        orig_shape: (H, W) of the image.
        as_numpy: Whether `data` is the numpy array rather than a tensor.
    """

    def __init__(self, masks: np.ndarray | torch.Tensor, orig_shape: tuple[int, int], as_numpy: bool = False) -> None:
        super().__init__((_to_numpy(masks),), orig_shape, as_numpy)

    @property
    def data(self) -> torch.Tensor | np.ndarray:
        """(N, H, W) bool masks: a tensor sharing their memory, or the array after `numpy()`."""
        return self._out(self._rows[0])

    @cached_property
    def xy(self) -> list[np.ndarray]:
        """One (K, 2) float32 XY polygon per mask in pixels; (0, 2) for an empty mask.

        As in Ultralytics, a mask in several parts gives one polygon through all
        their outer outlines, joined by zero-width seams; holes are not traced.
        """
        return [join_outlines(mask_to_polygons(mask)) for mask in self._rows[0]]

    @property
    def xyn(self) -> list[np.ndarray]:
        """`xy` divided by the image's width and height."""
        h, w = self.orig_shape
        return [polygon / np.array([w, h], dtype=np.float32) for polygon in self.xy]

    def __repr__(self) -> str:
        return f"Masks(shape={self.shape}, orig_shape={self.orig_shape})"


class Boxes(_MaskRows):
    """The boxes of one image's masks as Ultralytics' `Boxes`, and as the (N, 4) XYXY array itself.

    Ultralytics' attributes give tensors until `numpy()` is called, as there:
    `data` is (N, 6) rows [x1, y1, x2, y2, conf, cls]. SAM's masks have no class;
    as in Ultralytics' SAM, `cls` is each mask's number in its `Results` (0, 1, ...,
    kept through selections; `Results.names` maps it to "0", "1", ...). No track, so `id` is None. Used as an array
    (`np.asarray`, iteration, `len`, `shape`, `dtype`) it is the (N, 4) float32
    XYXY boxes; an int index gives one (4,) box array, an index that picks rows
    gives a `Boxes` of those.

    Args:
        xyxy: (N, 4) XYXY boxes in pixels (inclusive, as `batched_mask_to_box`).
        conf: (N,) the masks' scores.
        orig_shape: (H, W) of the image.
        as_numpy: Whether the attributes are numpy arrays rather than tensors.
        cls: (N,) each mask's number; default 0, 1, ..., N - 1.
    """

    def __init__(
        self,
        xyxy: np.ndarray | torch.Tensor,
        conf: np.ndarray | torch.Tensor,
        orig_shape: tuple[int, int],
        as_numpy: bool = False,
        cls: np.ndarray | torch.Tensor | None = None,
    ) -> None:
        conf = _to_numpy(conf, np.float32).reshape(-1)
        numbers = np.arange(len(conf), dtype=np.float32) if cls is None else _to_numpy(cls, np.float32).reshape(-1)
        super().__init__((_to_numpy(xyxy, np.float32).reshape(-1, 4), conf, numbers), orig_shape, as_numpy)

    def _with_rows(self, rows: tuple[np.ndarray, ...], as_numpy: bool) -> Self:
        xyxy, conf, cls = rows
        return type(self)(xyxy, conf, self.orig_shape, as_numpy, cls=cls)

    @property
    def data(self) -> torch.Tensor | np.ndarray:
        """(N, 6) float32 rows [x1, y1, x2, y2, conf, cls]."""
        xyxy, conf, cls = self._rows
        return self._out(np.concatenate([xyxy, conf[:, None], cls[:, None]], axis=1))

    @property
    def xyxy(self) -> torch.Tensor | np.ndarray:
        """(N, 4) XYXY in pixels."""
        return self._out(self._rows[0])

    @property
    def conf(self) -> torch.Tensor | np.ndarray:
        """(N,) the masks' scores (predicted IoU)."""
        return self._out(self._rows[1])

    @property
    def cls(self) -> torch.Tensor | np.ndarray:
        """(N,) float32 each mask's number in its `Results`, Ultralytics SAM's stand-in for a class."""
        return self._out(self._rows[2])

    @property
    def id(self) -> None:
        """Track ids: None, as for Ultralytics boxes that were not tracked."""
        return None

    @property
    def xywh(self) -> torch.Tensor | np.ndarray:
        """(N, 4) Ultralytics' XYWH: box centre, width and height (x2 - x1, y2 - y1), in pixels."""
        return self._out(self._centre_xywh())

    @property
    def xyxyn(self) -> torch.Tensor | np.ndarray:
        """`xyxy` divided by the image's width and height."""
        return self._out(self._rows[0] / self._wh_scale())

    @property
    def xywhn(self) -> torch.Tensor | np.ndarray:
        """`xywh` divided by the image's width and height."""
        return self._out(self._centre_xywh() / self._wh_scale())

    def _centre_xywh(self) -> np.ndarray:
        x1, y1, x2, y2 = self._rows[0].T
        return np.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], axis=1)

    def _wh_scale(self) -> np.ndarray:
        h, w = self.orig_shape
        return np.array([w, h, w, h], dtype=np.float32)

    def __repr__(self) -> str:
        xyxy, conf = (np.array2string(values, separator=", ") for values in self._rows[:2])
        return f"Boxes(xyxy={xyxy}, conf={conf}, orig_shape={self.orig_shape})"


@dataclass
class Results:
    """Masks for one image.

    Attributes:
        orig_img: (H, W, 3) uint8 RGB image the masks belong to.
        masks: (N, H, W) bool as `Masks` (an array or tensor given here is wrapped).
        scores: (N,) float32 predicted IoU of each mask.
        boxes: (N, 4) float32 XYXY boxes around the masks (zeros for an empty mask) as
            `Boxes`, with `scores` as their `conf`; computed from the masks when None.
        points: (N, P, 2) XY point prompts per mask, or None.
        labels: (N, P) labels of those points (1 foreground, 0 background, -1 padding
            where masks had fewer than P points), or None.
        bboxes: (N, 4) XYXY box prompts per mask (NaN for a mask without one), or None.
        path: Where the image came from, if it was a file or URL.
        low_res_logits: (N, 256, 256) float32 decoder logits of each mask, to feed back as a
            `mask_input` prompt; kept only when asked for.
        names: Ultralytics' class names: {0: "0", 1: "1", ...}, one per mask, as its SAM gives;
            with `classes`, the detector's names (default: each class id as text).
        speed: Milliseconds spent on the image per stage (`SPEED_KEYS`), None where not measured.
        save_dir: The folder `SAM.predict(save=...)` wrote this image's outputs to, if any.
        classes: (N,) int64 class id of each mask, from the detector whose boxes prompted it
            (`mobilesam.detect`); `Boxes.cls` gives these instead of the masks' numbers. None without.
    """

    orig_img: np.ndarray
    masks: Masks
    scores: np.ndarray
    boxes: Boxes | None = None
    points: np.ndarray | None = None
    labels: np.ndarray | None = None
    bboxes: np.ndarray | None = None
    path: str | None = None
    low_res_logits: np.ndarray | None = None
    names: dict[int, str] | None = None
    speed: dict[str, float | None] = field(default_factory=lambda: dict.fromkeys(SPEED_KEYS))
    save_dir: str | None = None
    classes: np.ndarray | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.masks, Masks):
            self.masks = Masks(self.masks, self.orig_shape)
        if not isinstance(self.boxes, Boxes):
            xyxy = batched_mask_to_box(torch.from_numpy(np.asarray(self.masks))) if self.boxes is None else self.boxes
            self.boxes = Boxes(xyxy, self.scores, self.orig_shape, cls=self.classes)
        if self.names is None and self.classes is not None:
            self.names = {int(c): str(int(c)) for c in np.unique(self.classes)}
        elif self.names is None:
            self.names = {i: str(i) for i in range(len(self.masks))}

    @classmethod
    def from_mask_records(cls, image: np.ndarray, records: list[dict], path: str | None = None) -> Results:
        """Results of segment everything: `SamAutomaticMaskGenerator.generate` records in binary_mask mode.

        Each mask keeps the grid point that produced it as its (foreground) prompt.
        """
        h, w = image.shape[:2]
        if not records:
            return cls(orig_img=image, masks=np.zeros((0, h, w), bool), scores=np.zeros(0, np.float32), path=path)
        return cls(
            orig_img=image,
            masks=np.stack([record["segmentation"] for record in records]),
            scores=np.array([record["predicted_iou"] for record in records], dtype=np.float32),
            points=np.array([record["point_coords"] for record in records], dtype=np.float64).reshape(-1, 1, 2),
            labels=np.ones((len(records), 1), dtype=np.int64),
            path=path,
        )

    def __len__(self) -> int:
        return len(self.masks)

    def __getitem__(self, index: Any) -> Results:
        """The masks `index` picks (an int, slice, index list or boolean mask) with their scores, boxes and prompts.

        An int gives a `Results` of that one mask (its mask axis kept), as Ultralytics'
        `results[0][i]`; `Boxes.cls` and `names` keep each mask's original number.
        """
        rows = _numpy_index(index)
        if not isinstance(rows, slice) and np.ndim(rows) == 0:
            rows = [int(rows)]

        def pick(values: np.ndarray | None) -> np.ndarray | None:
            return None if values is None else values[rows]

        return dataclasses.replace(
            self,
            masks=self.masks[rows],
            scores=self.scores[rows],
            boxes=self.boxes[rows],
            points=pick(self.points),
            labels=pick(self.labels),
            bboxes=pick(self.bboxes),
            low_res_logits=pick(self.low_res_logits),
            classes=pick(self.classes),
            names=dict(self.names),
            speed=dict(self.speed),
        )

    @property
    def orig_shape(self) -> tuple[int, int]:
        """(H, W) of the image."""
        return self.orig_img.shape[:2]

    def areas(self) -> np.ndarray:
        """(N,) number of pixels in each mask."""
        return np.asarray(self.masks).sum(axis=(1, 2))

    def cpu(self) -> Results:
        """A copy whose `masks` and `boxes` give CPU tensors, as Ultralytics' `Results.cpu()`."""
        return dataclasses.replace(self, masks=self.masks.cpu(), boxes=self.boxes.cpu())

    def numpy(self) -> Results:
        """A copy whose `masks` and `boxes` give numpy arrays, as Ultralytics' `Results.numpy()`."""
        return dataclasses.replace(self, masks=self.masks.numpy(), boxes=self.boxes.numpy())

    def to(self, *args: Any, **kwargs: Any) -> Results:
        """A copy whose `masks` and `boxes` give tensors moved by `torch.Tensor.to(*args, **kwargs)`, as Ultralytics'."""
        return dataclasses.replace(self, masks=self.masks.to(*args, **kwargs), boxes=self.boxes.to(*args, **kwargs))

    def cuda(self) -> Results:
        """A copy whose `masks` and `boxes` give tensors on the current CUDA device."""
        return self.to("cuda")

    def prompt(self, index: int) -> dict:
        """The prompt behind mask `index` as JSON-ready lists: "points" and "labels" and/or "box" (absent when unused)."""
        prompt: dict = {}
        if self.points is not None and self.labels is not None:
            labels = self.labels[index].reshape(-1)
            used = labels >= 0
            if used.any():
                prompt["points"] = self.points[index].reshape(-1, 2)[used].tolist()
                prompt["labels"] = labels[used].astype(int).tolist()
        if self.bboxes is not None and np.isfinite(self.bboxes[index]).all():
            prompt["box"] = self.bboxes[index].reshape(4).tolist()
        return prompt

    def plot(
        self,
        alpha: float = 0.5,
        draw_prompts: bool = True,
        *,
        masks: bool = True,
        img: np.ndarray | None = None,
        pil: bool = False,
        show: bool = False,
        save: bool = False,
        filename: str | os.PathLike[str] | None = None,
        **ultralytics_options: Any,
    ) -> np.ndarray | Image.Image:
        """Overlay of the masks (one colour each) and the prompts on the image (`draw_overlay`).

        Unlike Ultralytics' `plot`, which returns BGR, this returns RGB, as `orig_img` is.

        Args:
            alpha: Mask opacity in [0, 1].
            draw_prompts: Draw the points and boxes that were prompted.
            masks: Draw the masks.
            img: (H, W, 3) uint8 RGB image of the same size to draw on instead of `orig_img`.
            pil: Return a PIL image instead of an array.
            show: Also show it (`PIL.Image.Image.show`).
            save: Also write it to `filename` (default as `save()` names it).
            filename: Where `save` writes.
            **ultralytics_options: Ultralytics' other options (conf, labels, boxes, line_width, font_size,
                font, probs, kpt_radius, kpt_line, color_mode, txt_color): accepted; a true value warns
                once that SAM's overlay has nothing to apply it to.

        Returns:
            (H, W, 3) uint8 RGB, or a PIL image with `pil`.

        Raises:
            TypeError: An option Ultralytics' `plot` does not take either.
            ValueError: `img` is not the image's size.
        """
        unknown = sorted(set(ultralytics_options) - set(_PLOT_IGNORED))
        if unknown:
            raise TypeError(f"plot() got unexpected keyword arguments {unknown}")
        for keyword, value in ultralytics_options.items():
            if value:
                warn_ignored(keyword, _PLOT_IGNORED[keyword])
        base = self.orig_img if img is None else np.asarray(img)
        if base.shape != self.orig_img.shape:
            raise ValueError(f"img must have the image's shape {self.orig_img.shape}, got {base.shape}")
        drawn = np.asarray(self.masks) if masks else np.zeros((0, *self.orig_shape), bool)
        prompts = {"points": self.points, "labels": self.labels, "boxes": self.bboxes} if draw_prompts else {}
        overlay = draw_overlay(base, drawn, alpha, **prompts)
        if save:
            self._write_image(overlay, filename)
        if show:
            Image.fromarray(overlay).show(title=self.path)
        return Image.fromarray(overlay) if pil else overlay

    def save(self, filename: str | os.PathLike[str] | None = None, alpha: float = 0.5, **plot_options: Any) -> Path:
        """Write `plot(alpha, **plot_options)` to an image file (format from the suffix), atomically.

        Args:
            filename: Where; default "results_<the image's file name>" ("results_image0.jpg" for an
                image that came from no file), as Ultralytics names it. Missing folders are made.
            alpha: Mask opacity.
            **plot_options: More of `plot`'s options.
        """
        return self._write_image(self.plot(alpha, **plot_options), filename)

    def show(self, alpha: float = 0.5, **plot_options: Any) -> None:
        """Show `plot(alpha, **plot_options)` in the desktop's image viewer (`PIL.Image.Image.show`)."""
        self.plot(alpha, show=True, **plot_options)

    def _write_image(self, overlay: np.ndarray, filename: str | os.PathLike[str] | None) -> Path:
        target = Path(filename) if filename else Path(f"results_{Path(self.path or 'image0.jpg').name}")
        target.absolute().parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp:
            Image.fromarray(overlay).save(tmp, format=Image.registered_extensions().get(target.suffix.lower()))
        return target

    def verbose(self) -> str:
        """Ultralytics' log line of the masks: "1 0, 1 1, " (a count per name), or "(no detections), "."""
        if len(self) == 0:
            return "(no detections), "
        counts = np.bincount(np.asarray(self.boxes._rows[2], dtype=np.int64))
        return "".join(f"{n} {self.names[i]}{'s' * (n > 1)}, " for i, n in enumerate(counts.tolist()) if n > 0)

    def summary(self, normalize: bool = False, decimals: int = 5) -> list[dict[str, Any]]:
        """One dict per mask as Ultralytics' `summary`: name, class, confidence, box {x1, y1, x2, y2}, segments {x, y}.

        Args:
            normalize: Divide coordinates by the image's width and height.
            decimals: Digits to round to.
        """
        h, w = self.orig_shape if normalize else (1, 1)
        xyxy, conf, cls = self.boxes._rows
        rows = []
        for i, (box, score, number) in enumerate(zip(xyxy.tolist(), conf.tolist(), cls.tolist())):
            outline = self.masks.xy[i]
            rows.append(
                {
                    "name": self.names[int(number)],
                    "class": int(number),
                    "confidence": round(score, decimals),
                    "box": {
                        "x1": round(box[0] / w, decimals),
                        "y1": round(box[1] / h, decimals),
                        "x2": round(box[2] / w, decimals),
                        "y2": round(box[3] / h, decimals),
                    },
                    "segments": {
                        "x": (outline[:, 0] / w).astype(float).round(decimals).tolist(),
                        "y": (outline[:, 1] / h).astype(float).round(decimals).tolist(),
                    },
                }
            )
        return rows

    def to_df(self, normalize: bool = False, decimals: int = 5) -> Any:
        """`summary()` as a Polars DataFrame, as Ultralytics' `to_df`.

        Raises:
            ImportError: Polars is not installed (pip install polars).
        """
        try:
            import polars
        except ImportError as err:
            raise ImportError(f"Results.to_df needs Polars, as Ultralytics': pip install polars ({err})") from None
        return polars.DataFrame(self.summary(normalize=normalize, decimals=decimals))

    def to_csv(self, normalize: bool = False, decimals: int = 5) -> str:
        """`summary()` as CSV text with Ultralytics' columns; the nested box and segments as Python literals.

        Written with the standard library, so it needs no Polars; the text is the one
        Ultralytics' `to_csv` gives for SAM's results.
        """
        rows = self.summary(normalize=normalize, decimals=decimals)
        if not rows:
            return ""
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(rows[0])
        for row in rows:
            writer.writerow(repr(value) if isinstance(value, (dict, list)) else str(value) for value in row.values())
        return text.getvalue()

    def save_txt(self, txt_file: str | os.PathLike[str], save_conf: bool = False) -> str:
        """Append one YOLO-segmentation line per mask to `txt_file`: "class x1 y1 x2 y2 ... [conf]", normalised XY.

        As Ultralytics: a mask whose outline has fewer than 3 points is left out, and
        no file is written when no line remains. Missing folders are made.

        Args:
            txt_file: The text file.
            save_conf: End each line with the mask's score.

        Returns:
            `txt_file` as a string.
        """
        lines = []
        for outline, score, number in zip(self.masks.xyn, self.boxes._rows[1].tolist(), self.boxes._rows[2].tolist()):
            if len(outline) < 3:
                continue
            values = (int(number), *outline.reshape(-1).tolist(), *((score,) if save_conf else ()))
            lines.append(("%g " * len(values)).rstrip() % values)
        if lines:
            Path(txt_file).parent.mkdir(parents=True, exist_ok=True)
            with open(txt_file, "a", encoding="utf-8") as handle:
                handle.writelines(line + "\n" for line in lines)
        return str(txt_file)

    def save_crop(self, save_dir: str | os.PathLike[str], file_name: str | os.PathLike[str] = Path("im.jpg")) -> None:
        """Write the image cut around each mask's box to "<save_dir>/<name>/<file_name>.jpg", as Ultralytics.

        Each box grows by 2% and 10 pixels before the cut, clipped to the image; a name
        already taken gets "-2", "-3", ....
        """
        h, w = self.orig_shape
        for box, number in zip(self.boxes._rows[0], self.boxes._rows[2].tolist()):
            x1, y1, x2, y2 = (float(v) for v in box)
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            bw, bh = (x2 - x1) * 1.02 + 10, (y2 - y1) * 1.02 + 10
            # Truncated toward zero as Ultralytics' .long(), then clipped to the image.
            left, top = min(max(int(cx - bw / 2), 0), w), min(max(int(cy - bh / 2), 0), h)
            right, bottom = min(max(int(cx + bw / 2), 0), w), min(max(int(cy + bh / 2), 0), h)
            target = Path(save_dir) / self.names[int(number)] / Path(file_name).with_suffix(".jpg")
            target.parent.mkdir(parents=True, exist_ok=True)
            crop = self.orig_img[top:bottom, left:right]
            Image.fromarray(np.ascontiguousarray(crop)).save(increment_path(target), quality=95, subsampling=0)

    def to_dict(self) -> dict:
        """JSON-ready summary: image size and, per mask, COCO RLE, box, score and area."""
        h, w = self.orig_shape
        encoded = encode_masks(np.asarray(self.masks), self.scores, boxes=np.asarray(self.boxes))
        return {
            "path": self.path,
            "height": h,
            "width": w,
            "masks": [
                {"segmentation": mask.rle, "bbox_xyxy": list(mask.box), "score": mask.score, "area": mask.area}
                for mask in encoded
            ],
        }

    def to_json(self, indent: int | None = None) -> str:
        """`to_dict()` as a JSON string."""
        return json.dumps(self.to_dict(), indent=indent)

    def save_json(self, filename: str | os.PathLike[str]) -> Path:
        """Write `to_json()` atomically."""
        return write_text_atomic(filename, self.to_json())
