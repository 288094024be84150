"""The CPU description in benchmark headers, and the kernel caps that `.ci/run`'s AVX2 pass relies on."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mobilesam.bench import machine_summary
from mobilesam.cpu import KERNEL_CAPS, CpuInfo, cpu_info

# What .ci/run exports for its second pass of the oracle tests on AVX-512 CPUs.
AVX2_CAPS = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}

_EPYC = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13 64-Core Processor
flags\t\t: fpu sse sse2 avx fma avx2 bmi2 sha_ni
"""
_XEON = """processor\t: 0
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: avx avx2 avx512f avx512bw avx_vnni avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8
"""


def test_cpu_info_names_the_model_and_its_instruction_sets(tmp_path, monkeypatch):
    for key in KERNEL_CAPS:
        monkeypatch.delenv(key, raising=False)
    (tmp_path / "epyc").write_text(_EPYC)
    (tmp_path / "xeon").write_text(_XEON)
    assert cpu_info(tmp_path / "epyc").describe() == "AMD EPYC 7B13 64-Core Processor (AVX2; no AVX-512, VNNI, BF16, AMX)"
    assert cpu_info(tmp_path / "xeon").describe() == "Intel(R) Xeon(R) Processor (AVX2, AVX-512, VNNI, BF16, AMX)"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert cpu_info(tmp_path / "xeon").describe().endswith("; kernels capped by ONEDNN_MAX_CPU_ISA=AVX2")


def test_benchmark_header_names_this_cpu_and_torch_kernels():
    header = machine_summary()
    model = cpu_info().model
    assert header.startswith(model + " (") and f"ATen kernels {torch.backends.cpu.get_cpu_capability()}" in header


def _kernels_of_a_child(env: dict[str, str]) -> dict[str, str]:
    """The instruction set that ATen, oneDNN and MKL each run in a fresh process with `env`."""
    code = (
        "import torch; print('aten:', torch.backends.cpu.get_cpu_capability()); "
        "a = torch.randn(256, 256); a @ a; "
        "torch.nn.functional.conv2d(torch.randn(1, 64, 128, 128), torch.randn(64, 64, 3, 3), padding=1)"
    )
    child_env = dict(os.environ, **env, ONEDNN_VERBOSE="1", MKL_VERBOSE="1")
    out = subprocess.run([sys.executable, "-c", code], env=child_env, capture_output=True, text=True, timeout=120, check=True)
    text = out.stdout + out.stderr
    onednn = re.search(r"onednn_verbose,.*info,cpu,isa:(.*)", text)
    mkl = re.search(r"MKL_VERBOSE oneMKL .* for Intel\(R\) 64 architecture (.*?)(?: enabled processors)?, Lnx", text)
    return {
        "aten": re.search(r"aten: (\S+)", text).group(1),
        "onednn": onednn.group(1).strip() if onednn else "?",
        "mkl": mkl.group(1) if mkl else "?",
    }


# The caps name x86 instruction sets; elsewhere there is nothing to cap.
needs_avx2 = pytest.mark.skipif("AVX2" not in cpu_info().features, reason="the AVX2 caps apply to x86 CPUs with AVX2")


@needs_avx2
def test_avx2_caps_change_aten_and_onednn_kernels():
    # The CI's second pass is worth something only if the libraries obey; these two report on every x86 CPU.
    kernels = _kernels_of_a_child(AVX2_CAPS)
    assert kernels["aten"] == "AVX2", kernels
    assert kernels["onednn"] == "Intel AVX2", kernels


@needs_avx2
def test_avx2_caps_change_mkl_kernels_where_mkl_reports_them():
    kernels = _kernels_of_a_child(AVX2_CAPS)
    assert "AVX-512" not in kernels["mkl"], kernels
    if cpu_info().vendor != "GenuineIntel":
        # On AMD (and any other vendor) MKL says "Intel(R) Architecture processors" with or without
        # the cap: it names no instruction set, so whether it obeys cannot be seen from here.
        pytest.skip(f"MKL names no instruction set on a {cpu_info().vendor or 'non-Intel'} CPU: {kernels['mkl']!r}")
    assert "AVX2" in kernels["mkl"], kernels


def test_caps_set_for_this_run_are_in_force():
    caps = {key: os.environ[key] for key in KERNEL_CAPS if os.environ.get(key)}
    if not caps:
        pytest.skip("no kernel caps in this run (.ci/run sets them for its AVX2 pass on AVX-512 CPUs)")
    assert caps == AVX2_CAPS, "the AVX2 pass caps all three libraries"
    assert torch.backends.cpu.get_cpu_capability() == "AVX2"
    kernels = _kernels_of_a_child({})
    assert kernels["onednn"] == "Intel AVX2" and "AVX-512" not in kernels["mkl"], kernels


def test_cpu_class_follows_matrix_hardware_and_bf16_not_the_vendor():
    epyc_zen4 = CpuInfo("AMD EPYC", ("AVX2", "AVX-512", "VNNI", "BF16"), vendor="AuthenticAMD")
    xeon = CpuInfo("Intel Xeon", ("AVX2", "AVX-512", "VNNI", "BF16", "AMX"), vendor="GenuineIntel")
    assert [c.cpu_class for c in (xeon, epyc_zen4)] == ["amx", "avx512-bf16"]
    assert CpuInfo("Intel Xeon Gold 6248", ("AVX2", "AVX-512", "VNNI")).cpu_class == "avx2"
    assert CpuInfo("Ampere Altra", ()).cpu_class == "other"
    assert dataclasses.replace(xeon, kernel_caps=(("ONEDNN_MAX_CPU_ISA", "AVX2"),)).cpu_class == "other"


def test_cpu_info_reads_vendor_family_and_model(tmp_path):
    (tmp_path / "zen4").write_text(
        "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n"
        "model name\t: AMD EPYC\nflags\t\t: avx2 avx512f avx512_bf16\nprocessor\t: 1\nmodel name\t: other\n"
    )
    info = cpu_info(tmp_path / "zen4")
    assert (info.vendor, info.family, info.model_number, info.model) == ("AuthenticAMD", "25", "17", "AMD EPYC")
    assert info.describe().startswith("AMD EPYC (family 25 model 17) (AVX2, AVX-512, BF16; no VNNI, AMX)")


def test_ci_script_runs_the_avx2_pass_with_these_caps():
    script = (Path(__file__).resolve().parent.parent / ".ci" / "run").read_text()
    for key, value in AVX2_CAPS.items():
        assert f"{key}={value}" in script
