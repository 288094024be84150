"""`backend="auto"`: the fastest engine on this machine whose masks stay faithful to fp32. Torch-free."""

from __future__ import annotations

import importlib.util

from ..cpu import CpuInfo, cpu_info
from .specs import BACKEND_SPECS

# The least fraction of mask pixels equal to fp32's that "auto" accepts.
AUTO_MIN_MASK_AGREEMENT = 0.995
# Fastest first, from `benchmarks/encoder.py` on an Intel Xeon with AMX (README, "Speed"): bf16
# engines lead where the CPU computes bf16, then OpenVINO's f32, then torch and onnxruntime.
SPEED_ORDER = (
    "openvino-bf16",
    "torch-bf16",
    "openvino-int8",
    "openvino",
    "onnx-int8",
    "torch-compile",
    "torch-fast",
    "onnx",
    "torch",
)


def auto_backend_name(device: object = "cpu", cpu: CpuInfo | None = None, *, graphs_only: bool = False) -> str:
    """The backend "auto" stands for on `device` ("cpu" or a torch device) of this machine.

    With `graphs_only`, only engines of exported graphs qualify (an export folder was given).

    The first of `SPEED_ORDER` that: keeps masks equal to fp32's on at least
    `AUTO_MIN_MASK_AGREEMENT` of pixels (`BackendSpec.mask_agreement`); starts in
    seconds (`quick_start`); has its modules installed; computes bf16 in hardware
    if it is a bf16 engine; and runs on `device` (the graph engines are CPU-only).
    """
    cpu = cpu_info() if cpu is None else cpu
    for name in SPEED_ORDER:
        spec = BACKEND_SPECS[name]
        faithful = spec.mask_agreement >= AUTO_MIN_MASK_AGREEMENT and spec.quick_start
        if faithful and (spec.needs_export or not graphs_only) and runs_well_here(name, device, cpu):
            return name
    return "onnx" if graphs_only else "torch"


def runs_well_here(name: str, device: object = "cpu", cpu: CpuInfo | None = None) -> bool:
    """Whether backend `name` can run on `device` of this machine at its speed: modules installed,
    the right device (the graph engines are CPU-only), and bf16 only where the hardware computes it."""
    spec = BACKEND_SPECS[name]
    if not all(importlib.util.find_spec(module) for module in spec.modules):
        return False
    if _device_type(device) != "cpu":
        # On a GPU only torch runs; bf16 there is a CUDA question `torch-bf16` answers with a warning.
        return spec.runtime == "torch" and spec.precision == "fp32"
    cpu = cpu_info() if cpu is None else cpu
    # Capped kernels (`.ci/run`'s AVX2 pass) emulate bf16, many times slower than fp32.
    native_bf16 = bool({"BF16", "AMX"} & set(cpu.features)) and not cpu.kernel_caps
    return spec.precision != "bf16" or native_bf16


def _device_type(device: object) -> str:
    return getattr(device, "type", str(device).split(":")[0])
