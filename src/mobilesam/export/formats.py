"""Export formats by name, as a table: what each writes, which runtime runs it, which options it takes.

A new format is one writer module in this package and one row below (and,
where a runtime here runs it, a sessions module and a row in `runtime.RUNTIMES`).
Every writer takes `(model, out, *, model_name, weights, quantize, **options)`
and returns role -> path written.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..modeling import Sam
from ..runtime.layout import QUANTIZATIONS


@dataclass(frozen=True)
class ExportFormat:
    """One export format.

    Attributes:
        name: What `--format` and `SAM.export(format=...)` take (Ultralytics' names where it has one).
        summary: One line for `--help` and errors.
        module: Its writer's module under `mobilesam.export`.
        writer: The writer function there.
        out: The default output path; "{model}" stands for the registry name.
        quantize: The reduced-precision encoders `quantize=` may add (the folder keeps fp32 too).
        options: Keyword options beyond the common ones that the writer takes.
        extra: The pip extra its converter and runtime come with.
    """

    name: str
    summary: str
    module: str
    writer: str
    out: str
    extra: str
    quantize: tuple[str, ...] = ()
    options: tuple[str, ...] = ()

    def writer_function(self) -> Callable[..., dict[str, Path]]:
        """The writer (its module is imported now)."""
        return getattr(importlib.import_module(f"{__package__}.{self.module}"), self.writer)


_ONNX = ExportFormat(
    "onnx",
    "folder: encoder.onnx, four-mask decoder.onnx, metadata.json (OnnxPredictor, the onnx and openvino backends)",
    "exporter", "export_onnx", "onnx", "onnx", QUANTIZATIONS, ("calibration_images", "opset"),
)  # fmt: skip
FORMATS: dict[str, ExportFormat] = {
    row.name: row
    for row in (
        _ONNX,
        ExportFormat("sam", "folder: encoder.onnx, SAM's single-mask decoder.onnx (segment_anything's ONNX decoder contract)",
                     "formats", "_write_sam", "onnx", "onnx", options=("opset",)),
        ExportFormat("anylabeling", "zip: raw-RGB encoder, single-mask decoder, their int8 twins, config.yaml "
                     "(AnyLabeling, X-AnyLabeling, samexporter)", "formats", "_write_anylabeling", "mobilesam_{model}.zip",
                     "onnx", options=("opset",)),
        ExportFormat("openvino", "folder: OpenVINO IR encoder.xml/.bin and decoder.xml/.bin, metadata.json",
                     "openvino_ir", "export_openvino", "mobilesam_{model}_openvino", "openvino"),
        ExportFormat("executorch", "folder: XNNPACK-lowered encoder.pte, decoder.pte, decoder_single.pte, metadata.json "
                     "(ExecuTorch on Android and iOS)", "executorch", "export_executorch", "mobilesam_{model}_executorch",
                     "executorch", ("int8",)),
        ExportFormat("tflite", "folder: LiteRT encoder.tflite, decoder.tflite and decoder_single.tflite (a signature per "
                     "prompt point count), metadata.json (LiteRT on Android and iOS)", "tflite", "export_tflite",
                     "mobilesam_{model}_tflite", "tflite", ("fp16", "int8"), ("points",)),
        ExportFormat("coreml", "folder: Core ML programs encoder.mlpackage, decoder.mlpackage, decoder_single.mlpackage "
                     "(fp16 compute, iOS 16+; converted and validated, not run here), metadata.json", "coreml",
                     "export_coreml", "mobilesam_{model}_coreml", "coreml"),
        ExportFormat("ncnn", "folder: ncnn encoder.ncnn.param/.bin, decoder.ncnn.param/.bin, decoder_single.ncnn.param/.bin, "
                     "metadata.json (through pnnx; vit_t)",
                     "ncnn", "export_ncnn", "mobilesam_{model}_ncnn", "ncnn"),
        ExportFormat("torchscript", "folder: traced, frozen TorchScript encoder.pt, decoder.pt, decoder_single.pt, metadata.json "
                     "(torch.jit.load, LibTorch)",
                     "torchscript", "export_torchscript", "mobilesam_{model}_torchscript", ""),
        ExportFormat("web", "folder: the click-to-segment page as static files that segment in the browser (onnxruntime-web): "
                     "index.html, static/, models/ (the onnx format with its int8 encoder), web.json",
                     "web", "export_web", "mobilesam_{model}_web", "onnx"),
    )
}  # fmt: skip
# Older names: "mobilesam" is the ONNX folder's first name.
ALIASES = {"mobilesam": "onnx"}
# name -> what it writes, for `--help` and errors.
EXPORT_FORMATS = {name: row.summary for name, row in FORMATS.items()}


def export_format(name: str) -> ExportFormat:
    """The row of format `name` (or an alias of it).

    Raises:
        ValueError: Not a known format.
    """
    name = ALIASES.get(name, name)
    if name not in FORMATS:
        raise ValueError(f"unknown export format {name!r}; known: {', '.join(FORMATS)}")
    return FORMATS[name]


def check_format(name: str) -> None:
    """Raises ValueError unless `name` is one of `FORMATS` (or an alias)."""
    export_format(name)


def export_model(
    model: Sam,
    out: str | Path | None = None,
    *,
    format: str = "onnx",
    model_name: str,
    weights: str | Path | None = None,
    quantize: str | None = None,
    **options: Any,
) -> dict[str, Path]:
    """Export `model` in the format named `format` (see `FORMATS`).

    Args:
        model: The model, on CPU; it is put in eval mode.
        out: The folder or file to write; None: the format's default (`ExportFormat.out`).
        format: A name in `FORMATS` ("onnx", "sam", "anylabeling", "executorch", "tflite", ...).
        model_name: Registry name ("vit_t"): the sidecar records it.
        weights: Checkpoint the weights came from (its hash goes into the sidecar).
        quantize: A reduced-precision encoder to add, one of the format's `quantize`.
        options: What the format's writer takes beyond these (`ExportFormat.options`: opset, calibration_images).

    Returns:
        Role -> path written ("bundle" for a zip).

    Raises:
        ImportError: The format's converter is not installed (the message names the extra).
        ValueError: Unknown format, or an option the format does not take.
    """
    row = export_format(format)
    if quantize is not None and quantize not in row.quantize:
        takes = ", ".join(row.quantize) or "none"
        raise ValueError(f"the {row.name} format has no {quantize!r} encoder; its quantize options: {takes}")
    unknown = sorted(set(options) - set(row.options))
    if unknown:
        raise ValueError(f"the {row.name} format takes no {', '.join(unknown)}")
    target = Path(row.out.format(model=model_name) if out is None else out)
    return row.writer_function()(model, target, model_name=model_name, weights=weights, quantize=quantize, **options)


def _write_sam(
    model: Sam, out: Path, *, model_name: str, weights: str | Path | None, quantize: None, **options: Any
) -> dict[str, Path]:
    from .sam import export_sam_onnx

    return export_sam_onnx(model, out, **options)


def _write_anylabeling(
    model: Sam, out: Path, *, model_name: str, weights: str | Path | None, quantize: None, **options: Any
) -> dict[str, Path]:
    from .anylabeling import export_anylabeling

    return {"bundle": export_anylabeling(model, out, name=f"mobilesam_{model_name}", **options)}
