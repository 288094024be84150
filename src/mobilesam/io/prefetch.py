"""Image decoding in a background thread, a few images ahead, so the model never waits on the disk."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence
from typing import TypeVar

import numpy as np

from .images import DEFAULT_MAX_PIXELS, load_image
from .sources import ImageJob

Job = TypeVar("Job", bound=ImageJob)

_POLL_S = 0.1


def prefetch_images(
    jobs: Sequence[Job], depth: int = 2, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Iterator[tuple[Job, np.ndarray | Exception]]:
    """Yield (job, RGB image) in order, or (job, error) for an image that cannot be read.

    A reader thread stays at most `depth` images ahead (bounded memory). It
    stops when the consumer stops iterating, also on an exception or Ctrl-C.
    Unexpected errors (not a missing, unreadable or too large file, see
    `load_image` and its `max_pixels`) are raised in the consumer, not swallowed.
    """
    if depth < 1:
        raise ValueError(f"depth must be at least 1, got {depth}")
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: tuple) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def read_all() -> None:
        for job in jobs:
            try:
                item: tuple = (job, load_image(job.path, max_pixels=max_pixels), None)
            except (OSError, ValueError) as err:
                item = (job, err, None)
            except BaseException as err:  # re-raised in the consumer, so nothing is lost
                put((job, None, err))
                return
            if not put(item):
                return

    reader = threading.Thread(target=read_all, name="mobilesam-image-reader", daemon=True)
    reader.start()
    try:
        for _ in range(len(jobs)):
            job, image, fatal = ready.get()
            if fatal is not None:
                raise fatal
            yield job, image
    finally:
        stop.set()
        reader.join()
