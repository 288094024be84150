"""`Results`: the masks of one image with their boxes, scores and prompts (Ultralytics style).

`Results.masks` and `Results.boxes` are `Masks` and `Boxes`: Ultralytics' attributes
(`masks.data`, `masks.xy`, `boxes.xyxy`, `boxes.conf`, ...; see
https://docs.ultralytics.com/modes/predict/#working-with-results) over plain arrays,
which they also behave as: an (N, H, W) bool array and an (N, 4) XYXY array.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
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

    def _out(self, array: np.ndarray) -> torch.Tensor | np.ndarray:
        return array if self._as_numpy else torch.from_numpy(array)

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

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        return np.array(self._rows[0], dtype=dtype, copy=copy)

    def __len__(self) -> int:
        return len(self._rows[0])

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter(self._rows[0])

    def __getitem__(self, index: Any) -> Self | np.ndarray:
        rows = _numpy_index(index)
        if _picks_rows(index):
            return self._with_rows(tuple(array[rows] for array in self._rows), self._as_numpy)
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
    `data` is (N, 6) rows [x1, y1, x2, y2, conf, cls]. SAM's masks have no class,
    so `cls` is all zeros, and no track, so `id` is None. Used as an array
    (`np.asarray`, iteration, `len`, `shape`, `dtype`) it is the (N, 4) float32
    XYXY boxes; an int index gives one (4,) box array, an index that picks rows
    gives a `Boxes` of those.

    Args:
        xyxy: (N, 4) XYXY boxes in pixels (inclusive, as `batched_mask_to_box`).
        conf: (N,) the masks' scores.
        orig_shape: (H, W) of the image.
        as_numpy: Whether the attributes are numpy arrays rather than tensors.
    """

    def __init__(
        self,
        xyxy: np.ndarray | torch.Tensor,
        conf: np.ndarray | torch.Tensor,
        orig_shape: tuple[int, int],
        as_numpy: bool = False,
    ) -> None:
        super().__init__(
            (_to_numpy(xyxy, np.float32).reshape(-1, 4), _to_numpy(conf, np.float32).reshape(-1)), orig_shape, as_numpy
        )

    @property
    def data(self) -> torch.Tensor | np.ndarray:
        """(N, 6) float32 rows [x1, y1, x2, y2, conf, cls]."""
        xyxy, conf = self._rows
        return self._out(np.concatenate([xyxy, conf[:, None], np.zeros_like(conf)[:, None]], axis=1))

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
        """(N,) zeros: SAM's masks have no class."""
        return self._out(np.zeros_like(self._rows[1]))

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
        xyxy, conf = (np.array2string(values, separator=", ") for values in self._rows)
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

    def __post_init__(self) -> None:
        if not isinstance(self.masks, Masks):
            self.masks = Masks(self.masks, self.orig_shape)
        if not isinstance(self.boxes, Boxes):
            xyxy = batched_mask_to_box(torch.from_numpy(np.asarray(self.masks))) if self.boxes is None else self.boxes
            self.boxes = Boxes(xyxy, self.scores, self.orig_shape)

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

    def plot(self, alpha: float = 0.5, draw_prompts: bool = True) -> np.ndarray:
        """Overlay of the masks (one colour each) and the prompts on the image: (H, W, 3) uint8 RGB (`draw_overlay`)."""
        prompts = {"points": self.points, "labels": self.labels, "boxes": self.bboxes} if draw_prompts else {}
        return draw_overlay(self.orig_img, np.asarray(self.masks), alpha, **prompts)

    def save(self, filename: str | os.PathLike[str], alpha: float = 0.5) -> Path:
        """Write `plot()` to an image file (format from the suffix), atomically."""
        target = Path(filename)
        with atomic_path(target) as tmp:
            Image.fromarray(self.plot(alpha)).save(tmp, format=Image.registered_extensions().get(target.suffix.lower()))
        return target

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
