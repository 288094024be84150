"""What each backend name stands for, as data: runtime, precision, numerics, what it needs. Torch-free."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BackendSpec:
    """One backend name's capabilities, known before a backend is made.

    Attributes:
        name: What `make_backend` and `--backend` take.
        runtime: "torch" or "onnxruntime".
        precision: What the image encoder computes in: "fp32", "bf16" or "int8".
        reference_numerics: Gives the reference's bits (eager fp32 torch only).
        needs_export: Reads the graphs of `mobilesam export` (`onnx_dir`, `--onnx-dir`).
        mask_only_prompts: Decodes a mask prompt given without a point or box.
        summary: One line for help texts and tables.
    """

    name: str
    runtime: str
    precision: str
    reference_numerics: bool
    needs_export: bool
    mask_only_prompts: bool
    summary: str


BACKEND_SPECS: dict[str, BackendSpec] = {
    spec.name: spec
    for spec in (
        BackendSpec("torch", "torch", "fp32", True, False, True, "the model's own modules, eager fp32: the reference numerics"),
        BackendSpec("torch-fast", "torch", "fp32", False, False, True, "a rewritten copy of the encoder, fp32, within 1e-4"),
        BackendSpec("torch-bf16", "torch", "bf16", False, False, True, "torch-fast's encoder in bf16: masks ~99.8% equal to fp32"),
        BackendSpec("torch-compile", "torch", "fp32", False, False, True, "torch-fast's encoder compiled by TorchInductor, fp32"),
        BackendSpec("onnx", "onnxruntime", "fp32", False, True, False, "onnxruntime over `mobilesam export`'s fp32 graphs"),
        BackendSpec("onnx-int8", "onnxruntime", "int8", False, True, False, "onnxruntime, dynamic int8 encoder: masks ~99% equal to fp32"),
    )
}
BACKENDS = tuple(BACKEND_SPECS)


def backend_spec(name: str) -> BackendSpec:
    """The spec of backend `name`.

    Raises:
        ValueError: Not a known backend name.
    """
    if name not in BACKEND_SPECS:
        raise ValueError(f"unknown backend {name!r}; known backends: {', '.join(BACKENDS)}")
    return BACKEND_SPECS[name]
