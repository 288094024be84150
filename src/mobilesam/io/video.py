"""Video files frame by frame, through OpenCV: reading as (H, W, 3) uint8 RGB, and writing overlays back.

A video's width x height is checked against the same pixel limit as an image
file's (`mobilesam.io.images.DEFAULT_MAX_PIXELS`) before its first frame is decoded.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..errors import ImageTooLarge
from .images import DEFAULT_MAX_PIXELS

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpeg", ".mpg", ".wmv", ".asf", ".ts")
"""The file suffixes taken for videos, lower case (Ultralytics' `VID_FORMATS` less GIF, which is read as an image)."""


@dataclass(frozen=True)
class VideoFrame:
    """One decoded frame of a video.

    Attributes:
        image: (H, W, 3) uint8 RGB pixels.
        index: The frame's number in the file, from 0.
        count: Frames in the file as its header says (0 when unknown).
        fps: Frames per second as its header says (0.0 when unknown).
    """

    image: np.ndarray
    index: int
    count: int
    fps: float


def is_video(path: str | os.PathLike[str]) -> bool:
    """Whether `path` names a video file by its suffix (`VIDEO_SUFFIXES`)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def read_frames(
    path: str | os.PathLike[str], vid_stride: int = 1, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Iterator[VideoFrame]:
    """Decode every `vid_stride`-th frame of a video file, first frame first.

    Args:
        path: The video file.
        vid_stride: Take one frame in this many (1: all).
        max_pixels: Largest width x height decoded, checked from the header before any frame.

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: OpenCV cannot open it as a video, or `vid_stride` < 1.
        ImageTooLarge: Its frames have more than `max_pixels` pixels.
    """
    text = os.fspath(path)
    if vid_stride < 1:
        raise ValueError(f"vid_stride must be at least 1, got {vid_stride}")
    if not os.path.isfile(text):
        raise FileNotFoundError(f"video file not found: {text}")
    capture = cv2.VideoCapture(text)
    try:
        if not capture.isOpened():
            raise ValueError(f"cannot read video {text}: OpenCV could not open it")
        size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        if size[0] * size[1] > max_pixels:
            raise ImageTooLarge(text, size, max_pixels)
        count = max(int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), 0)
        fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        index = 0
        while capture.grab():
            if index % vid_stride == 0:
                ok, bgr = capture.retrieve()
                if not ok:
                    break
                yield VideoFrame(np.ascontiguousarray(bgr[:, :, ::-1]), index, count, fps)
            index += 1
    finally:
        capture.release()


class VideoWriter:
    """Frames written to a Motion-JPEG `.avi` file, one (H, W, 3) uint8 RGB array at a time.

    Args:
        path: The file to write; its suffix becomes `.avi`.
        fps: Frames per second to record.
        size: (width, height) of every frame.
    """

    def __init__(self, path: str | os.PathLike[str], fps: float, size: tuple[int, int]) -> None:
        self.path = Path(path).with_suffix(".avi")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"MJPG"), max(fps, 1.0), size)
        if not self._writer.isOpened():
            raise OSError(f"cannot write video {self.path}: OpenCV has no MJPG writer here")

    def write(self, rgb: np.ndarray) -> None:
        """Append one (H, W, 3) uint8 RGB frame."""
        self._writer.write(np.ascontiguousarray(rgb[:, :, ::-1]))

    def close(self) -> None:
        """Finish the file."""
        self._writer.release()
