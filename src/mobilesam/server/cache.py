"""A byte-bounded LRU cache of image embeddings with one computation per key.

Two requests that upload the same image at the same time share one
computation: the second finds the first one's pending future and waits on it.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

logger = logging.getLogger(__name__)

V = TypeVar("V")
Lookup = Literal["hit", "joined", "computed"]


@dataclass(frozen=True)
class CacheStats:
    """A snapshot of the cache: what it holds and how it was used."""

    entries: int
    bytes: int
    max_bytes: int
    hits: int
    computations: int


class SingleFlightLRU(Generic[V]):
    """Thread-safe LRU bounded by the total size of its values, with single-flight computation.

    Args:
        max_bytes: Bound on the sum of `size_of(value)` over the entries kept.
        size_of: Size in bytes of a value.
    """

    def __init__(self, max_bytes: int, size_of: Callable[[V], int]) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = max_bytes
        self._size_of = size_of
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[V, int]] = OrderedDict()
        self._pending: dict[str, Future[V]] = {}
        self._bytes = 0
        self._hits = 0
        self._computations = 0

    def get(self, key: str) -> V | None:
        """The cached value for `key` (marking it recently used), or None."""
        with self._lock:
            item = self._entries.get(key)
            if item is None:
                return None
            self._entries.move_to_end(key)
            self._hits += 1
            return item[0]

    def get_or_submit(self, key: str, submit: Callable[[], Future[V]]) -> tuple[Future[V], Lookup]:
        """A future for the value of `key`: done if cached, shared if being computed, else from `submit()`.

        `submit` starts the computation and returns its future; it is called
        under the cache lock, so it must only enqueue work, never wait for it.
        An exception from `submit` propagates and leaves nothing pending; a
        failed computation is not cached, so the next request tries again.
        """
        with self._lock:
            item = self._entries.get(key)
            if item is not None:
                self._entries.move_to_end(key)
                self._hits += 1
                done: Future[V] = Future()
                done.set_result(item[0])
                return done, "hit"
            pending = self._pending.get(key)
            if pending is not None:
                self._hits += 1
                return pending, "joined"
            future = submit()
            self._pending[key] = future
            self._computations += 1
        future.add_done_callback(lambda f: self._finish(key, f))
        return future, "computed"

    def _finish(self, key: str, future: Future[V]) -> None:
        with self._lock:
            self._pending.pop(key, None)
            if future.cancelled() or future.exception() is not None:
                return
            value = future.result()
            size = self._size_of(value)
            if size > self.max_bytes:
                logger.warning("not caching %s: %d bytes exceed the cache bound of %d bytes", key, size, self.max_bytes)
                return
            self._entries[key] = (value, size)
            self._bytes += size
            while self._bytes > self.max_bytes:
                evicted, (_, evicted_size) = self._entries.popitem(last=False)
                self._bytes -= evicted_size
                logger.debug("evicted %s (%d bytes)", evicted, evicted_size)

    def stats(self) -> CacheStats:
        """Counts and sizes, taken atomically."""
        with self._lock:
            return CacheStats(len(self._entries), self._bytes, self.max_bytes, self._hits, self._computations)
