"""Prompt decoder speed per backend against the reference `mobile_sam`, same run, same embedding.

    python benchmarks/decoder.py [--checkpoint mobile_sam.pt] [--threads 2] [--repeats 5]
        [--backend torch --backend openvino ...] [--onnx-dir DIR]

Times `SamPredictor.predict` with one click and multimask output: prompt
encoding, mask decoder, and upscaling the masks to the image (the
astronaut photo, 512x512), per prompt, median of `--repeats` rounds of 20.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from encoder import parse_args, setup

from mobilesam.bench import Row, bench_decoder, format_table, machine_summary
from mobilesam.fidelity import demo_prompts

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from images import sample_images
from reference import mobile_sam


def main() -> int:
    args = parse_args(__doc__)
    with tempfile.TemporaryDirectory() as tmp:
        ours, reference, _, backends = setup(args, Path(tmp))
        image = sample_images()["astronaut"]
        predictor = mobile_sam.SamPredictor(reference)
        predictor.set_image(image)
        prompt = demo_prompts(*image.shape[:2])[0]
        ms = bench_decoder(ours, lambda: predictor.predict(**prompt), backends, image, args.repeats)
    rows = [Row("reference", decoder_ms=ms["baseline"], decoder_ratio=1.0)]
    rows += [Row(b.name, decoder_ms=ms[b.name], decoder_ratio=ms["baseline"] / ms[b.name]) for b in backends]
    print(f"machine: {machine_summary()}")
    print(f"decoder + upscaling per prompt (one click, multimask), median of {args.repeats} rounds of 20\n")
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
