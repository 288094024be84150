"""Opening an export folder in the runtime a graph backend's name stands for."""

from __future__ import annotations

from pathlib import Path

from ..backends.specs import BACKEND_SPECS, backend_spec
from ..home import home_dir
from .runtimes import open_export
from .sessions import GraphSessions

GRAPH_BACKENDS = tuple(name for name, spec in BACKEND_SPECS.items() if spec.needs_export)


def openvino_cache_dir() -> Path:
    """Where OpenVINO keeps the models it compiled, so a second process starts in a fraction of the time."""
    return home_dir() / "openvino"


def open_sessions(folder: str | Path, backend: str = "onnx", *, threads: int | None = None) -> GraphSessions:
    """The graphs of export `folder`, loaded as backend `backend` runs them.

    Args:
        folder: Written by `mobilesam export` (or the export cache).
        backend: One of `GRAPH_BACKENDS` ("onnx", "onnx-int8", "openvino", ...).
        threads: Intra-op threads; None lets the runtime choose (one per core).

    Raises:
        ValueError: Not a graph backend's name.
        FileNotFoundError: The folder lacks a graph that backend needs.
        ImportError: The backend's runtime is not installed.
    """
    spec = backend_spec(backend)
    if not spec.needs_export:
        raise ValueError(f"backend {backend!r} runs torch, not exported graphs; graph backends: {', '.join(GRAPH_BACKENDS)}")
    options: dict[str, object] = {}
    if spec.runtime == "openvino":
        options = {"precision": "fp32" if spec.precision == "int8" else spec.precision, "cache_dir": openvino_cache_dir()}
    return open_export(folder, runtime=spec.runtime, variant=spec.quantize, threads=threads, **options)
