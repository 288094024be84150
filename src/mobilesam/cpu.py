"""The CPU at hand: its model and the instruction sets that decide which kernels run.

MKL and oneDNN pick their kernels by instruction set, and those kernels differ
in speed (bf16 and int8 are fast only with BF16/AMX/VNNI) and in rounding, so
every benchmark figure names the CPU it came from. Torch-free.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

# What a benchmark header lists, and the /proc/cpuinfo flags that give each.
ISA_FEATURES: tuple[tuple[str, frozenset[str]], ...] = (
    ("AVX2", frozenset({"avx2"})),
    ("AVX-512", frozenset({"avx512f"})),
    ("VNNI", frozenset({"avx512_vnni", "avx_vnni"})),
    ("BF16", frozenset({"avx512_bf16"})),
    ("AMX", frozenset({"amx_tile"})),
)
# Environment variables that cap the kernels below what the CPU has (`.ci/run`'s AVX2 pass sets them).
KERNEL_CAPS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")


@dataclass(frozen=True)
class CpuInfo:
    """The CPU's model name, which of `ISA_FEATURES` it has, and the kernel caps in force."""

    model: str
    features: tuple[str, ...]
    kernel_caps: tuple[tuple[str, str], ...] = ()

    def describe(self) -> str:
        """One line for a benchmark header, e.g. 'AMD EPYC 7B13 (AVX2; no AVX-512, VNNI, BF16, AMX)'."""
        missing = [name for name, _ in ISA_FEATURES if name not in self.features]
        isa = ", ".join(self.features) or "none of " + ", ".join(name for name, _ in ISA_FEATURES)
        if missing and self.features:
            isa += "; no " + ", ".join(missing)
        line = f"{self.model} ({isa})"
        if self.kernel_caps:
            line += "; kernels capped by " + " ".join(f"{key}={value}" for key, value in self.kernel_caps)
        return line


def cpu_info(cpuinfo: Path = Path("/proc/cpuinfo")) -> CpuInfo:
    """The CPU this process runs on (model and flags from /proc/cpuinfo where there is one)."""
    model, flags = platform.processor() or platform.machine() or "unknown CPU", set()
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    features = tuple(name for name, any_of in ISA_FEATURES if flags & any_of)
    caps = tuple((key, os.environ[key]) for key in KERNEL_CAPS if os.environ.get(key))
    return CpuInfo(model, features, caps)
