"""Peak-RSS probe for the reference `mobile_sam`: one image and one click in a fresh process.

    python benchmarks/reference_rss.py CHECKPOINT THREADS

Prints the peak resident set size in MiB; `benchmarks/encoder.py` runs it
beside `python -m mobilesam.probe` for each of our backends.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from mobilesam import load_sam
from mobilesam.fidelity import demo_image, demo_prompts
from mobilesam.probe import current_peak_rss_mib
from mobilesam.registry import model_name

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from reference import mobile_sam, sync_reference


def main() -> None:
    checkpoint, threads = sys.argv[1], int(sys.argv[2])
    if threads:
        torch.set_num_threads(threads)
    ours = load_sam(checkpoint)
    reference = sync_reference(mobile_sam.sam_model_registry[model_name(ours)](), ours)
    del ours
    predictor = mobile_sam.SamPredictor(reference)
    image = demo_image()
    predictor.set_image(image)
    predictor.predict(**demo_prompts(*image.shape[:2])[0])
    print(current_peak_rss_mib())


if __name__ == "__main__":
    main()
