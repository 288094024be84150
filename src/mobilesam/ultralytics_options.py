"""Ultralytics' predict keywords as `SAM.predict` applies them, and where its outputs go.

Ultralytics' `SAM.predict` takes its `cfg/default.yaml` predict and visualise
settings. Those that mean something for SAM are applied (`ULTRALYTICS_APPLIED`);
the rest are accepted with one warning each saying why they change nothing
(`ULTRALYTICS_IGNORED`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .io.video import VideoFrame, VideoWriter
from .results import Results, increment_path, warn_ignored

ULTRALYTICS_APPLIED = (
    "conf", "iou", "device", "quantize", "imgsz", "verbose", "vid_stride", "save", "save_frames", "save_txt",
    "save_conf", "save_crop", "show", "show_labels", "show_conf", "show_boxes", "line_width", "project", "name",
    "exist_ok", "retina_masks", "batch", "task", "mode",
)  # fmt: skip
"""Ultralytics' predict keywords that `SAM.predict` applies (see its docstring for how)."""

ULTRALYTICS_IGNORED = {
    "augment": "SAM has no test-time augmentation",
    "embed": "use SAM.predictor.embed for image embeddings",
    "visualize": "SAM has no class activation maps",
    "classes": "SAM's masks have no class",
    "agnostic_nms": "SAM's masks have no class to run NMS across",
    "max_det": "SAM returns one mask per prompt (or the mask generator's own selection), as Ultralytics' SAM",
    "dnn": "the engine is chosen by SAM(backend=...)",
    "nms": "SAM's prompted masks go through no NMS",
    "compile": "the engine is chosen by SAM(backend=...)",
    "channels_last": "the engine is chosen by SAM(backend=...)",
    "rect": "SAM resizes every image to its own square input",
    "stream_buffer": "sources are files, read frame by frame; there are no live streams",
    "tracker": "SAM does not track",
    "data": "SAM has no class names to read",
    "model": "the model is chosen by SAM(...)",
    "source": "give the source as the first argument",
}
"""Ultralytics' predict keywords that `SAM.predict` accepts and ignores, with why."""


def torch_device(device: str | int | torch.device) -> torch.device:
    """A torch device from Ultralytics' forms: 0, "0" or "0,1" (the first GPU is taken) mean "cuda:0"."""
    if isinstance(device, torch.device):
        return device
    text = str(device).strip().split(",")[0].strip()
    return torch.device(f"cuda:{text}" if text.isdigit() else text)


_QUANTIZE = {"8": True, "int8": True, "16": True, "fp16": True, "half": True, "32": False, "fp32": False, "none": False}


@dataclass
class PredictOptions:
    """Ultralytics' predict keywords as `SAM.predict` applies them."""

    conf: float | None = None
    iou: float | None = None
    device: str | int | torch.device | None = None
    half: bool | None = None
    verbose: bool = False
    vid_stride: int = 1
    save: bool = False
    save_frames: bool = False
    save_txt: bool = False
    save_conf: bool = False
    save_crop: bool = False
    show: bool = False
    project: str | None = None
    name: str | None = None
    exist_ok: bool = False
    plot: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_keywords(cls, keywords: dict[str, Any], input_size: int) -> PredictOptions:
        """Check and read the keywords of `ULTRALYTICS_APPLIED`, warning once where one changes nothing."""
        keywords = dict(keywords)
        if keywords.get("task", "segment") != "segment":
            raise ValueError(f"task must be 'segment' for SAM, got {keywords['task']!r}")
        if keywords.pop("mode", "predict") not in ("predict", "track"):
            raise ValueError("mode must be 'predict' for SAM.predict")
        keywords.pop("task", None)
        imgsz = keywords.pop("imgsz", None)
        if imgsz is not None and imgsz not in (input_size, [input_size, input_size], (input_size, input_size)):
            warn_ignored("imgsz", f"the encoder runs at its input size {input_size}, so the masks stay the reference's")
        keywords.pop("retina_masks", None)  # SAM's masks are always full resolution
        if keywords.pop("batch", 1) != 1:
            warn_ignored("batch", "images are encoded one at a time, as in Ultralytics' SAM")
        quantize = keywords.pop("quantize", None)
        half = None if quantize is None else _QUANTIZE.get(str(quantize).lower())
        if quantize is not None and half is None:
            raise ValueError(f"quantize must be 8, 16 or 32 (or 'int8', 'fp16', 'fp32'), got {quantize!r}")
        plot = {
            option: keywords.pop(key)
            for key, option in (("show_labels", "labels"), ("show_conf", "conf"), ("show_boxes", "boxes"))
            if key in keywords
        }
        if "line_width" in keywords:
            plot["line_width"] = keywords.pop("line_width")
        if keywords.get("device") == "":
            keywords.pop("device")
        run = cls(half=half, plot=plot, **keywords)
        if run.conf is not None and not 0 <= run.conf <= 1:
            raise ValueError(f"conf must lie in [0, 1], got {run.conf}")
        if run.vid_stride < 1:
            raise ValueError(f"vid_stride must be at least 1, got {run.vid_stride}")
        return run


class PredictOutputs:
    """Where `SAM.predict(save=..., save_txt=..., save_crop=..., show=...)` puts each result, as Ultralytics does."""

    def __init__(self, run: PredictOptions) -> None:
        self.run = run
        self.save_dir: Path | None = None
        if run.save or run.save_txt or run.save_crop:
            project = Path(run.project) if run.project else Path()
            if not project.is_absolute():
                project = Path("runs", "segment", project)
            folder = project / (run.name or "predict")
            self.save_dir = (folder if run.exist_ok else increment_path(folder)).resolve()
            self.save_dir.mkdir(parents=True, exist_ok=True)
        self._bases: dict[tuple[str, int], str] = {}
        self._videos: dict[str, VideoWriter] = {}

    def write(self, result: Results, number: int, frame: VideoFrame | None) -> None:
        """Write and show `result` (input `number` of this call, or a frame of a video) as asked."""
        if self.save_dir is None and not self.run.show:
            return
        overlay = result.plot(**self.run.plot) if self.run.save or self.run.show else None
        if self.run.show:
            result.show(**self.run.plot)
        if self.save_dir is None:
            return
        result.save_dir = str(self.save_dir)
        base = self._base(result.path, number if frame is None else -1)
        label_stem = base if frame is None else f"{base}_{frame.index}"
        if self.run.save_txt:
            labels = self.save_dir / "labels" / f"{label_stem}.txt"
            labels.unlink(missing_ok=True)  # replace, not append to, an earlier run's labels
            result.save_txt(labels, save_conf=self.run.save_conf)
        if self.run.save_crop:
            result.save_crop(self.save_dir / "crops", f"{label_stem}.jpg")
        if overlay is None or not self.run.save:
            return
        if frame is None:
            result.save(self.save_dir / f"{base}.jpg", **self.run.plot)
            return
        if base not in self._videos:
            self._videos[base] = VideoWriter(self.save_dir / base, frame.fps, (overlay.shape[1], overlay.shape[0]))
        self._videos[base].write(overlay)
        if self.run.save_frames:
            result.save(self.save_dir / f"{base}_frames" / f"{base}_{frame.index}.jpg", **self.run.plot)

    def _base(self, path: str | None, number: int) -> str:
        """The output name of an input: its file stem, with "-2", "-3", ... where two inputs share one."""
        stem = Path(path).stem if path else f"image{number}"
        key = (path or stem, number if path is None else 0)
        if key not in self._bases:
            taken = set(self._bases.values())
            base, count = stem, 1
            while base in taken:
                count += 1
                base = f"{stem}-{count}"
            self._bases[key] = base
        return self._bases[key]

    def close(self) -> None:
        """Finish the videos being written."""
        for writer in self._videos.values():
            writer.close()
        self._videos.clear()
