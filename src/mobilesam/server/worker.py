"""Model work off the event loop: a bounded queue served by worker threads.

`concurrent.futures.ThreadPoolExecutor` queues without bound; here a full
queue is an immediate `WorkerBusy`, which the app answers with 503 and
Retry-After instead of holding ever more requests (and their images) in memory.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")


class WorkerBusy(RuntimeError):
    """The work queue is full; try again later."""


class ModelWorker:
    """Runs submitted callables on `threads` threads, at most `queue_size` waiting.

    Args:
        queue_size: Jobs that may wait for a thread; more are refused with `WorkerBusy`.
        threads: Worker threads. One suits a CPU, where torch already uses every core per call.
    """

    def __init__(self, queue_size: int = 16, threads: int = 1) -> None:
        if queue_size < 1:
            raise ValueError(f"queue_size must be at least 1, got {queue_size}")
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        self.queue_size = queue_size
        self._queue: queue.Queue[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]] | None] = queue.Queue(queue_size)
        self._threads = [threading.Thread(target=self._serve, name=f"mobilesam-worker-{i}", daemon=True) for i in range(threads)]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Queue `fn(*args)`; its future holds the result or the exception.

        Raises:
            WorkerBusy: The queue is full.
        """
        future: Future[T] = Future()
        try:
            self._queue.put_nowait((future, fn, args))
        except queue.Full:
            raise WorkerBusy(f"the model is busy: {self.queue_size} requests are already waiting") from None
        return future

    def waiting(self) -> int:
        """Jobs queued and not yet started."""
        return self._queue.qsize()

    def close(self) -> None:
        """Finish the queued jobs and stop the threads."""
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join()

    def _serve(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            future, fn, args = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args)
            except BaseException as err:  # handed to the waiting request, which reports it
                future.set_exception(err)
            else:
                future.set_result(result)
