"""The inference runtimes, as a table: what each runs, what it needs installed, where it lives. Torch-free.

One row per runtime; its module defines one `GraphSessions` subclass. A new
export format is one writer module in `mobilesam.export`, one sessions module
here, and one row below.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from .layout import find_graphs
from .sessions import GraphSessions


@dataclass(frozen=True)
class Runtime:
    """One runtime that runs exported graphs.

    Attributes:
        name: What `open_export(runtime=...)` takes.
        formats: The export formats (metadata "format") whose graphs it runs, preferred runtime first.
        module: Its sessions module under `mobilesam.runtime`.
        sessions: The `GraphSessions` subclass there.
        modules: The Python modules it imports (checked before loading, for a clear error).
        extra: The pip extra that installs them: `pip install 'mobilesam[extra]'` ("": mobilesam's own dependencies).
        runs_here: It runs on Linux x86; False: the export is converted and validated, not run.
        summary: One line for help texts and tables.
    """

    name: str
    formats: tuple[str, ...]
    module: str
    sessions: str
    modules: tuple[str, ...]
    extra: str
    summary: str
    runs_here: bool = True

    def missing_modules(self) -> list[str]:
        """The modules it needs that are not installed."""
        return [name for name in self.modules if importlib.util.find_spec(name) is None]

    def sessions_class(self) -> type[GraphSessions]:
        """Its `GraphSessions` subclass.

        Raises:
            ImportError: A module it needs is not installed (the message names the extra).
            RuntimeError: It does not run on this platform.
        """
        if not self.runs_here:
            raise RuntimeError(f"{self.name} does not run on this platform; its exports are converted and validated only")
        missing = self.missing_modules()
        if missing:
            install = f"mobilesam[{self.extra}]" if self.extra else " ".join(missing)
            raise ImportError(f"the {self.name} runtime needs {', '.join(missing)}: pip install '{install}'")
        return getattr(importlib.import_module(f"{__package__}.{self.module}"), self.sessions)


RUNTIMES: dict[str, Runtime] = {
    runtime.name: runtime
    for runtime in (
        Runtime("onnxruntime", ("onnx",), "onnxruntime", "OnnxRuntimeSessions", ("onnxruntime",), "onnx",
                "onnxruntime's CPU provider over ONNX graphs"),
        Runtime("openvino", ("onnx", "openvino"), "openvino", "OpenVinoSessions", ("openvino",), "openvino",
                "OpenVINO's CPU plugin over ONNX graphs or its own IR"),
        Runtime("executorch", ("executorch",), "executorch", "ExecuTorchSessions", ("executorch",), "executorch",
                "ExecuTorch's runtime (PyTorch on Android and iOS), XNNPACK-delegated .pte programs"),
        Runtime("litert", ("tflite",), "litert", "LiteRtSessions", ("ai_edge_litert",), "tflite",
                "the LiteRT (TensorFlow Lite) interpreter, XNNPACK-delegated, over .tflite flatbuffers"),
        Runtime("ncnn", ("ncnn",), "ncnn", "NcnnSessions", ("ncnn",), "ncnn",
                "Tencent's ncnn (the usual C++ runtime of Android apps) over .param/.bin pairs"),
        Runtime("torchscript", ("torchscript",), "torchscript", "TorchScriptSessions", ("torch",), "",
                "torch.jit.load over traced, frozen TorchScript modules (the files LibTorch's C++ torch::jit::load reads)"),
        Runtime("coreml", ("coreml",), "coreml", "", ("coremltools",), "coreml",
                "Core ML on Apple devices: .mlpackage programs, converted and validated here, not run", runs_here=False),
    )
}  # fmt: skip


def runtime_named(name: str) -> Runtime:
    """The row of runtime `name`.

    Raises:
        ValueError: Not a runtime in `RUNTIMES`.
    """
    if name not in RUNTIMES:
        raise ValueError(f"unknown runtime {name!r}; known: {', '.join(RUNTIMES)}")
    return RUNTIMES[name]


def runtime_for_format(export_format: str) -> Runtime:
    """The first runtime here that runs graphs of `export_format`.

    Raises:
        ValueError: No runtime here runs that format.
    """
    for runtime in RUNTIMES.values():
        if export_format in runtime.formats and runtime.runs_here:
            return runtime
    known = sorted({f for runtime in RUNTIMES.values() if runtime.runs_here for f in runtime.formats})
    raise ValueError(f"no runtime here runs {export_format!r} exports; formats that run here: {', '.join(known)}")


def open_export(
    folder: str | Path,
    *,
    runtime: str | None = None,
    variant: str | None = None,
    threads: int | None = None,
    **options: object,
) -> GraphSessions:
    """The graphs of export `folder`, loaded in `runtime` (default: the first one that runs its format).

    Args:
        folder: Written by `mobilesam export` in any format a runtime here runs.
        runtime: A name in `RUNTIMES`; None: by the folder's format.
        variant: A reduced-precision encoder the folder holds ("int8", "fp16", ...); None: fp32.
        threads: Intra-op threads; None lets the runtime choose.
        options: Runtime-specific options (OpenVINO: precision, cache_dir).

    Raises:
        FileNotFoundError: Not an export folder, or a graph is missing.
        ValueError: Unknown runtime or variant, or the runtime does not run the folder's format.
        ImportError: The runtime is not installed.
    """
    graphs = find_graphs(folder, variant)
    row = runtime_for_format(graphs.format) if runtime is None else runtime_named(runtime)
    if graphs.format not in row.formats:
        raise ValueError(f"{folder} holds {graphs.format!r} graphs; the {row.name} runtime runs {', '.join(row.formats)}")
    return row.sessions_class()(graphs, threads=threads, **options)
