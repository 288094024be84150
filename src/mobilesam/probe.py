"""Peak memory of one image prediction, measured in a fresh process.

Run as ``python -m mobilesam.probe MODEL BACKEND [ONNX_DIR] [THREADS]`` it
loads MODEL, predicts one click on one image with BACKEND and prints its
peak resident set size in MiB. The ONNX backends run through the torch-free
`OnnxPredictor` (torch is never imported, which is their point);
"import-only" stops after importing torch and `SamPredictor`.
Nothing here imports torch at module level.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

from .backends.specs import BACKEND_SPECS
from .fidelity import demo_image, demo_prompts


def peak_rss_mib(model: str, backend: str, onnx_dir: Path | None = None, threads: int | None = None) -> float:
    """Peak RSS of a fresh process that loads `model` and predicts one click on one image with `backend`."""
    return peak_rss_of([sys.executable, "-m", "mobilesam.probe", model, backend, str(onnx_dir or ""), str(threads or 0)])


def peak_rss_of(command: list[str]) -> float:
    """Run a probe process whose last line of output is its peak RSS in MiB, and return that."""
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"the RSS probe {command[1:]} failed: {result.stderr.strip().splitlines()[-1:]}")
    return float(result.stdout.strip().splitlines()[-1])


def current_peak_rss_mib() -> float:
    """This process's peak RSS: VmHWM on Linux (ru_maxrss would include the parent's RSS inherited at fork)."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # bytes on macOS


def _probe(model_name: str, backend: str, onnx_dir: str, threads: int) -> float:
    image = demo_image()
    prompt = demo_prompts(*image.shape[:2])[0]
    spec = BACKEND_SPECS.get(backend)
    if spec is not None and spec.needs_export:
        from .runtime.predictor import OnnxPredictor

        predictor = OnnxPredictor(onnx_dir, backend=backend, threads=threads or None)
        predictor.set_image(image)
        predictor.predict(**prompt)
        return current_peak_rss_mib()
    import torch

    from .backends import make_backend
    from .predictor import SamPredictor
    from .registry import load_sam

    if backend == "import-only":
        return current_peak_rss_mib()
    if threads:
        torch.set_num_threads(threads)
    model = load_sam(model_name).eval()
    torch_predictor = SamPredictor(model, make_backend(backend, model))
    torch_predictor.set_image(image)
    torch_predictor.predict(**prompt)
    return current_peak_rss_mib()


if __name__ == "__main__":
    print(json.dumps(_probe(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))))
