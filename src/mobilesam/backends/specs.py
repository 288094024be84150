"""What each backend name stands for, as data: runtime, precision, numerics, what it needs. Torch-free."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BackendSpec:
    """One backend name's capabilities, known before a backend is made.

    Attributes:
        name: What `make_backend` and `--backend` take.
        runtime: What runs the image encoder: "torch", "onnxruntime" or "openvino".
        decoder_runtime: What decodes prompts: "torch" or "onnxruntime" (the decoder graph). The
            OpenVINO backends decode in torch (`FastTorchDecoding`): a click takes about half
            the time of OpenVINO's run of the decoder graph on 2 cores (README, "Speed").
        precision: What the image encoder computes in: "fp32", "bf16" or "int8".
        reference_numerics: Gives the reference's bits (eager fp32 torch only).
        needs_export: Runs the graphs of `mobilesam export` (made and cached on first use).
        mask_only_prompts: Decodes a mask prompt given without a point or box.
        quick_start: The first image takes under 10 s (no minute-long compile).
        quantize: Which quantised encoder of the export it reads (`runtime.layout.QUANTIZATIONS`), if any.
        modules: The Python modules it needs beyond torch, exporting its graphs included.
        summary: One line for help texts and tables.
    """

    name: str
    runtime: str
    precision: str
    summary: str
    decoder_runtime: str = "torch"
    reference_numerics: bool = False
    needs_export: bool = False
    mask_only_prompts: bool = True
    quick_start: bool = True
    quantize: str | None = None
    modules: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """The name and what the encoder computes in, e.g. "openvino-bf16 (bf16)": what summaries print."""
        return f"{self.name} ({self.precision})"


# Exporting checks each graph with onnx and runs it once in onnxruntime.
_EXPORT_MODULES = ("onnx", "onnxruntime")


def _graphs(name: str, runtime: str, precision: str, summary: str, **facts: object) -> BackendSpec:
    if runtime == "onnxruntime":
        # The decoder graph takes a point or a box; a mask prompt alone has no graph input.
        facts.update(decoder_runtime="onnxruntime", mask_only_prompts=False, modules=_EXPORT_MODULES)
    else:
        facts["modules"] = (*_EXPORT_MODULES, "openvino", *facts.get("modules", ()))
    return BackendSpec(name, runtime, precision, summary, needs_export=True, **facts)


BACKEND_SPECS: dict[str, BackendSpec] = {
    spec.name: spec
    for spec in (
        BackendSpec("torch", "torch", "fp32", "the model's own modules, eager fp32: the reference numerics",
                    reference_numerics=True),
        BackendSpec("torch-fast", "torch", "fp32", "a rewritten copy of the encoder, fp32, within 1e-4"),
        BackendSpec("torch-bf16", "torch", "bf16", "torch-fast's encoder in bf16 autocast; clicks decode fp32, segment everything bf16"),
        BackendSpec("torch-compile", "torch", "fp32", "torch-fast's encoder compiled by TorchInductor, fp32",
                    quick_start=False),
        _graphs("onnx", "onnxruntime", "fp32", "onnxruntime over the exported fp32 graphs"),
        _graphs("onnx-int8", "onnxruntime", "int8", "onnxruntime, dynamic int8 encoder, fp32 decoder graph",
                quantize="int8"),
        _graphs("openvino", "openvino", "fp32", "OpenVINO's f32 encoder over the exported graph; clicks decode in torch"),
        _graphs("openvino-bf16", "openvino", "bf16", "OpenVINO, bf16 encoder (AVX-512 BF16 or AMX); clicks decode in torch"),
        _graphs("openvino-int8", "openvino", "int8", "OpenVINO, int8 encoder NNCF calibrated on photos; clicks decode in torch",
                quantize="int8-static", modules=("nncf", "skimage")),
    )
}  # fmt: skip
BACKENDS = tuple(BACKEND_SPECS)


def backend_spec(name: str) -> BackendSpec:
    """The spec of backend `name`.

    Raises:
        ValueError: Not a known backend name.
    """
    if name not in BACKEND_SPECS:
        raise ValueError(f"unknown backend {name!r}; known backends: {', '.join(BACKENDS)}")
    return BACKEND_SPECS[name]
