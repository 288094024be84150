"""`backend="auto"` and `half=True`: the fastest engine for this CPU class, by measured figures. Torch-free.

Faithful (the default): an fp32 engine, or a reduced-precision one whose
masks were measured to reproduce fp32's on this CPU class
(`fidelity.FAITHFUL`). Reduced precision (`half=True`): the fastest bf16 or
int8 engine measured within `fidelity.REDUCED` on this class; where none is,
the faithful pick. Every figure comes from `benchmarks/encoder.py` by
`fidelity`'s protocol, per CPU class (`cpu.CPU_CLASSES`), fastest first.
"""

from __future__ import annotations

import importlib.util
import warnings
from dataclasses import dataclass

from ..cpu import CpuInfo, cpu_info
from ..fidelity import FAITHFUL, REDUCED, Agreement
from .specs import BACKEND_SPECS, backend_spec


@dataclass(frozen=True)
class Measured:
    """One engine's figures on one CPU class.

    Attributes:
        backend: The engine's name.
        speedup: Its image encoder's speed, × the reference `mobile_sam` eager fp32 in the same run.
        agreement: Its masks against fp32 torch's (`fidelity`'s protocol); None where not measured so.
    """

    backend: str
    speedup: float
    agreement: Agreement | None = None


# Where each class's figures were measured (vit_t at 1024, seeded random weights, 2 threads, idle);
# agreements rounded down.
MEASURED_ON = {
    "amx": "Intel Xeon, Sapphire Rapids class (AVX2, AVX-512, VNNI, BF16, AMX); pixel shares only, "
    "from an earlier protocol (the engine's embedding decoded by fp32 torch)",
    "avx512-bf16": "AMD EPYC, family 25 model 17 (AVX2, AVX-512, VNNI, BF16; no AMX)",
}
MEASURED: dict[str, tuple[Measured, ...]] = {
    "amx": (
        Measured("openvino-bf16", 7.02, Agreement(0.9981, None)),
        Measured("openvino-int8", 4.85, Agreement(0.9922, None)),
        Measured("openvino", 2.73),
        Measured("onnx-int8", 2.49, Agreement(0.9924, None)),
        Measured("torch-bf16", 2.48, Agreement(0.9982, None)),
        Measured("torch-compile", 2.34),
        Measured("onnx", 1.89),
        Measured("torch-fast", 1.52),
    ),
    "avx512-bf16": (
        Measured("openvino-bf16", 5.99, Agreement(0.9982, 0.7789)),
        Measured("openvino-int8", 5.88, Agreement(0.9916, 0.0)),
        Measured("onnx-int8", 3.69, Agreement(0.9912, 0.0)),
        Measured("torch-bf16", 3.13, Agreement(0.9981, 0.7637)),
        Measured("openvino", 3.00, Agreement(0.99999, 0.9999)),
        Measured("onnx", 2.57, Agreement(0.99999, 0.9999)),
        Measured("torch-compile", 2.32, Agreement(0.99999, 0.9999)),
        Measured("torch-fast", 1.91, Agreement(0.99999, 0.9999)),
    ),
}
# For engines a class has no figure of, and for the classes not measured with every engine ("avx2":
# an AMD EPYC 7B13 was, before the OpenVINO engines; "other"): the fp32 engines in the order they
# have on every class measured so far. A reduced-precision engine is never picked unmeasured.
UNMEASURED_ORDER = ("openvino", "onnx", "torch-fast", "torch")


def resolve_backend_name(name: str, device: object = "cpu", *, graphs_only: bool = False, half: bool = False) -> str:
    """The engine `name` stands for: "auto" becomes this machine's pick (`auto_backend_name`), others stay.

    With `half` and "auto", a warning says so where no reduced-precision engine qualifies
    here and the faithful pick runs instead.

    Raises:
        ValueError: Unknown name, or `half` with an fp32 engine's name.
    """
    if name != "auto":
        if half and backend_spec(name).precision == "fp32":
            raise ValueError(
                f"half=True asks for reduced precision, but backend {name!r} computes fp32; "
                "give backend 'auto' (or a bf16/int8 backend's name) with it"
            )
        return backend_spec(name).name
    chosen = auto_backend_name(device, graphs_only=graphs_only, half=half)
    if half and BACKEND_SPECS[chosen].precision == "fp32":
        warnings.warn(
            f"half=True: no bf16 or int8 engine was measured to keep masks within the reduced-precision bar "
            f"on this CPU class ({cpu_info().cpu_class}), so the faithful {chosen!r} runs instead",
            RuntimeWarning,
            stacklevel=2,
        )
    return chosen


def auto_backend_name(
    device: object = "cpu", cpu: CpuInfo | None = None, *, graphs_only: bool = False, half: bool = False
) -> str:
    """The backend "auto" stands for on `device` ("cpu" or a torch device) of this machine.

    Args:
        device: Where the model is; on a GPU only the torch engines run.
        cpu: The CPU; default this one.
        graphs_only: Only engines of exported graphs qualify (an export folder was given).
        half: Reduced precision: the fastest bf16/int8 engine within `fidelity.REDUCED`
            on this CPU class, where there is one (`reduced_precision_backend`); else the faithful pick.
    """
    cpu = cpu_info() if cpu is None else cpu
    if half and (name := reduced_precision_backend(device, cpu, graphs_only=graphs_only)):
        return name
    for name in _speed_order(cpu):
        spec = BACKEND_SPECS[name]
        if not spec.quick_start or (graphs_only and not spec.needs_export):
            continue
        if _is_faithful(name, cpu) and runs_well_here(name, device, cpu):
            return name
    return "onnx" if graphs_only else "torch"


def reduced_precision_backend(device: object = "cpu", cpu: CpuInfo | None = None, *, graphs_only: bool = False) -> str | None:
    """The fastest bf16/int8 engine measured within `fidelity.REDUCED` on this CPU class; None if none is."""
    cpu = cpu_info() if cpu is None else cpu
    for figures in MEASURED.get(cpu.cpu_class, ()):
        spec = BACKEND_SPECS[figures.backend]
        if spec.precision == "fp32" or not spec.quick_start or (graphs_only and not spec.needs_export):
            continue
        if figures.agreement is not None and figures.agreement.meets(REDUCED) and runs_well_here(spec.name, device, cpu):
            return spec.name
    return None


def measured(name: str, cpu: CpuInfo | None = None) -> Measured | None:
    """Backend `name`'s figures on this CPU's class; None where it was not measured there."""
    cpu = cpu_info() if cpu is None else cpu
    return next((m for m in MEASURED.get(cpu.cpu_class, ()) if m.backend == name), None)


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


def _speed_order(cpu: CpuInfo) -> list[str]:
    """Every backend, fastest first: this class's measured ones, then `UNMEASURED_ORDER`, then the rest."""
    order = [m.backend for m in MEASURED.get(cpu.cpu_class, ())]
    order += [name for name in UNMEASURED_ORDER if name not in order]
    return order + [name for name in BACKEND_SPECS if name not in order]


def _is_faithful(name: str, cpu: CpuInfo) -> bool:
    """fp32 engines stay within 1e-4 of torch (tests hold each to it); others need figures meeting `FAITHFUL` here."""
    if BACKEND_SPECS[name].precision == "fp32":
        return True
    figures = measured(name, cpu)
    return figures is not None and figures.agreement is not None and figures.agreement.meets(FAITHFUL)


def _device_type(device: object) -> str:
    return getattr(device, "type", str(device).split(":")[0])
