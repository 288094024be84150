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

# The classes engines are measured and ordered by (`backends.auto`): what decides which kernels
# are fast is matrix hardware and native bf16, not the vendor. "other" is any CPU none of these
# describe (no AVX2, another architecture), or one whose kernels are capped below what it has.
CPU_CLASSES = ("amx", "avx512-bf16", "avx2", "other")


@dataclass(frozen=True)
class CpuInfo:
    """The CPU's model name, which of `ISA_FEATURES` it has, and the kernel caps in force.

    `vendor` is /proc/cpuinfo's vendor_id ("GenuineIntel", "AuthenticAMD", "" where unknown):
    MKL reports its kernels on Intel CPUs only. `family`/`model_number` tell apart CPUs
    whose model name is as vague as "AMD EPYC".
    """

    model: str
    features: tuple[str, ...]
    kernel_caps: tuple[tuple[str, str], ...] = ()
    vendor: str = ""
    family: str = ""
    model_number: str = ""

    @property
    def cpu_class(self) -> str:
        """One of `CPU_CLASSES`: where the kernels are capped, "other" (capped bf16 is emulated)."""
        if self.kernel_caps:
            return "other"
        if "AMX" in self.features:
            return "amx"
        if "BF16" in self.features:
            return "avx512-bf16"
        return "avx2" if "AVX2" in self.features else "other"

    def describe(self) -> str:
        """One line for a benchmark header, e.g. 'AMD EPYC 7B13 (AVX2; no AVX-512, VNNI, BF16, AMX)'."""
        missing = [name for name, _ in ISA_FEATURES if name not in self.features]
        isa = ", ".join(self.features) or "none of " + ", ".join(name for name, _ in ISA_FEATURES)
        if missing and self.features:
            isa += "; no " + ", ".join(missing)
        name = self.model
        if self.family and self.model_number:
            name += f" (family {self.family} model {self.model_number})"
        line = f"{name} ({isa})"
        if self.kernel_caps:
            line += "; kernels capped by " + " ".join(f"{key}={value}" for key, value in self.kernel_caps)
        return line


def cpu_info(cpuinfo: Path = Path("/proc/cpuinfo")) -> CpuInfo:
    """The CPU this process runs on (model and flags from /proc/cpuinfo where there is one)."""
    fields: dict[str, str] = {}
    if cpuinfo.is_file():
        # The first processor's block; every core of one machine is alike.
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
            if key.strip() == "flags":
                break
    model = fields.get("model name") or platform.processor() or platform.machine() or "unknown CPU"
    flags = set(fields.get("flags", "").split())
    features = tuple(name for name, any_of in ISA_FEATURES if flags & any_of)
    caps = tuple((key, os.environ[key]) for key in KERNEL_CAPS if os.environ.get(key))
    return CpuInfo(model, features, caps, fields.get("vendor_id", ""), fields.get("cpu family", ""), fields.get("model", ""))
