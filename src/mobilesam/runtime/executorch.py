"""The exported graphs as ExecuTorch programs (.pte), run by ExecuTorch's Python runtime with their XNNPACK delegates.

ExecuTorch's Python bindings take and return torch tensors (they link libtorch),
so this runtime, like the torchscript one, needs torch installed.
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import Any

import numpy as np

from .layout import ExportedGraphs
from .sessions import GraphSessions

# ExecuTorch's thread pool is one for the process, and a loaded method owns the memory its
# intermediate values live in, so runs of every program (and resizing the pool) take turns.
_RUN_LOCK = threading.Lock()
# The methods loaded here. XNNPACK takes the pool when a method loads; resizing it while such a method
# is alive is what ExecuTorch calls unsafe (with executorch 1.5, a method loaded before resizing the
# pool from 2 threads to 1 and back to 2 ran on one thread from then on).
_LOADED: weakref.WeakSet[Any] = weakref.WeakSet()


class ExecuTorchSessions(GraphSessions):
    """The encoder and decoder programs of an executorch export, loaded in ExecuTorch's runtime.

    Safe to call from several threads: runs take turns (see `_RUN_LOCK`).

    Args:
        graphs: From `find_graphs`.
        threads: Threads of ExecuTorch's thread pool, which XNNPACK runs on; None keeps
            what it has (one per performance core). The pool is one for the whole process,
            and can be resized only while no program opened here is alive.

    Raises:
        ImportError: executorch is not installed.
        ValueError: A .pte file is truncated or is not an ExecuTorch program, or `threads` < 1.
        RuntimeError: `threads` differs from the pool's size while other ExecuTorch sessions are open.
    """

    def __init__(self, graphs: ExportedGraphs, *, threads: int | None = None) -> None:
        super().__init__(graphs)
        try:
            import torch
            from executorch.extension.pybindings import portable_lib
            from executorch.runtime import Runtime
        except ImportError as err:
            raise ImportError(f"the executorch runtime needs executorch: pip install 'mobilesam[executorch]' ({err})") from None
        self._torch = torch
        if threads is not None:
            set_threads(portable_lib, threads)
        runtime = Runtime.get()
        self.encoder = load_method(runtime, graphs.encoder)
        self.decoder = load_method(runtime, graphs.decoder)
        points = self.metadata.get("decoder_points", {})
        self.max_points: int | None = points.get("max")

    def _run_encoder(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        (image_embeddings,) = self._run(self.encoder, feeds)
        return image_embeddings

    def _run_decoder(self, feeds: dict[str, np.ndarray], outputs: tuple[str, ...]) -> list[np.ndarray]:
        points = feeds["point_coords"].shape[1]
        if self.max_points is not None and points > self.max_points:
            raise ValueError(f"this executorch decoder takes at most {self.max_points} points per prompt, got {points}")
        found = dict(zip(self.graphs.decoder_outputs, self._run(self.decoder, feeds), strict=True))
        return [found[name] for name in outputs]

    def _run(self, method: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """`method`'s outputs for `feeds` (positional, in graph order)."""
        # torch warns on arrays it cannot write to (numpy broadcast views); those are copied.
        tensors = [self._torch.from_numpy(value if value.flags.writeable else value.copy()) for value in feeds.values()]
        with _RUN_LOCK:
            results = method.execute(tensors)
        return [result.numpy() for result in results]


def load_method(runtime: Any, path: str | os.PathLike[str]) -> Any:
    """The "forward" method of the ExecuTorch program at `path`, loaded in `runtime` (`executorch.runtime.Runtime`).

    Raises:
        ValueError: `path` is truncated or is not an ExecuTorch program.
    """
    try:
        method = runtime.load_program(os.fspath(path)).load_method("forward")
    except RuntimeError as err:
        # ExecuTorch reports a bad file as "Failed to load program, error: 0x:<code>" (its reason goes to its log).
        raise ValueError(
            f"{path} is not a readable ExecuTorch program ({err}); export again with `mobilesam export --format executorch`"
        ) from None
    _LOADED.add(method)
    return method


def set_threads(portable_lib: Any, threads: int) -> None:
    """Give ExecuTorch's process-wide thread pool `threads` threads (when it has another number).

    Raises:
        ValueError: `threads` < 1.
        RuntimeError: The pool has another size and a method loaded here is alive (`_LOADED`).
    """
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    with _RUN_LOCK:
        current = portable_lib._threadpool_get_thread_count()
        if current == threads:
            return
        if len(_LOADED):
            raise RuntimeError(
                f"ExecuTorch's thread pool has {current} threads and open ExecuTorch sessions use it, so it cannot "
                f"be resized to {threads}; open every executorch export in this process with the same threads"
            )
        portable_lib._unsafe_reset_threadpool(threads)
