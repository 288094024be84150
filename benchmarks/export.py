"""Every export format at 1024 in its own runtime here: file size, encoder and click time, masks against fp32 torch.

    python benchmarks/export.py [--checkpoint mobile_sam.pt] [--threads 2] [--repeats 5]
        [--format onnx --format executorch ...]

Each format (and each of its reduced-precision encoders) is exported from the
same weights as the reference `mobile_sam` (seeded random unless a checkpoint
is given), loaded through `OnnxPredictor` in the runtime the folder names,
and timed interleaved with the reference in this process: the encoder on the
astronaut photo (set_image: resize, encoder) and one click (prompt encoding,
decoder, upscaling), medians. Agreement is `mobilesam.fidelity`'s protocol
(`bench.export_agreement`). Core ML does not run on Linux: its row has the size only.

These are figures of this x86 CPU with 2 threads, not of a phone: phone
CPUs, GPUs and NPUs differ in kind (README, "Phones").
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

from mobilesam import OnnxPredictor, load_sam
from mobilesam.bench import export_agreement, machine_summary, median_seconds
from mobilesam.export import FORMATS, export_model
from mobilesam.fidelity import PROTOCOL, demo_prompts, protocol_images
from mobilesam.registry import model_name
from mobilesam.runtime.layout import find_graphs
from mobilesam.runtime.runtimes import runtime_for_format

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from reference import mobile_sam, paired_models, sync_reference

# The client formats (sam, anylabeling) hold the onnx format's graphs: not timed again.
TIMED_FORMATS = ("onnx", "openvino", "torchscript", "ncnn", "coreml", "executorch", "tflite")
# LiteRT's decoders hold one signature per point count, each converted on its own (~20 s at 1024):
# the counts the protocol's prompts have (a click, a box: 2; two clicks, a box and a click: 3).
FORMAT_OPTIONS = {"tflite": {"points": (2, 3)}}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="MobileSAM checkpoint (default: seeded random weights)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--format", action="append", choices=TIMED_FORMATS, help="repeat for several (default: all)")
    return parser.parse_args()


def graph_mib(path: Path) -> float:
    """MiB of one graph: its file (or package folder) and the weights file beside it (.bin: OpenVINO, ncnn)."""
    files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path, path.with_suffix(".bin")]
    return sum(p.stat().st_size for p in set(files) if p.is_file()) / 2**20


def main() -> int:
    args = parse_args()
    torch.set_num_threads(args.threads)
    if args.checkpoint:
        ours = load_sam(args.checkpoint).eval()
        reference = sync_reference(mobile_sam.sam_model_registry[model_name(ours)](), ours)
    else:
        ours, reference = paired_models("vit_t", seed=0)
    images = protocol_images()
    image = images["astronaut"]
    click = demo_prompts(*image.shape[:2])[0]
    reference_predictor = mobile_sam.SamPredictor(reference)
    reference_predictor.set_image(image)
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.format or TIMED_FORMATS:
            for variant in (None, *FORMATS[name].quantize):
                if name == "onnx" and variant == "int8-static":
                    continue  # an OpenVINO IR: timed by benchmarks/encoder.py as openvino-int8
                folder = Path(tmp) / f"{name}-{variant or 'fp32'}"
                export_model(
                    ours, folder, format=name, model_name=model_name(ours), quantize=variant, **FORMAT_OPTIONS.get(name, {})
                )
                graphs = find_graphs(folder, variant)
                sizes = f"{graph_mib(graphs.encoder):.1f} | {graph_mib(graphs.decoder):.1f}"
                label = f"{name} ({variant or 'fp32'})"
                if not runtime_for_format_here(name):
                    lines.append(f"| {label} | {sizes} | not run here | | | | | |")
                    continue
                predictor = OnnxPredictor(folder, variant=variant, threads=args.threads)
                encoder, clicks = time_against(reference_predictor, predictor, image, click, args.repeats)
                agreement, embedding_error = export_agreement(ours, folder, variant=variant, images=images)
                lines.append(
                    f"| {label} | {sizes} | {1000 * encoder['export']:.0f} | {encoder['reference'] / encoder['export']:.2f} "
                    f"| {1000 * clicks['export']:.1f} | {clicks['reference'] / clicks['export']:.2f} "
                    f"| {embedding_error:.1e} | {100 * agreement.pixels_equal:.2f}% / {agreement.min_iou:.4f} |"
                )
                print(lines[-1], flush=True)
    print(f"\nmachine: {machine_summary()}")
    print(f"{args.threads} threads; encoder: set_image of the astronaut photo; click: one point, multimask; medians")
    print(f"mask agreement: {PROTOCOL}\n")
    print(
        "| format (encoder) | encoder MiB | decoder MiB | encoder ms | × ref | click ms | × ref | max Δ embedding | masks = fp32 / lowest IoU |"
    )
    print("|" + "---|" * 9)
    print("\n".join(lines))
    return 0


def time_against(reference, predictor, image, click, repeats: int) -> tuple[dict[str, float], dict[str, float]]:
    """Median seconds of set_image and of one click, for the reference and the export, interleaved."""
    predictor.set_image(image)
    encoder = median_seconds(
        {"reference": lambda: reference.set_image(image), "export": lambda: predictor.set_image(image)}, repeats
    )
    clicks = median_seconds(
        {"reference": lambda: reference.predict(**click), "export": lambda: predictor.predict(**click)}, repeats * 4
    )
    return encoder, clicks


def runtime_for_format_here(name: str) -> bool:
    """Whether a runtime here runs the format's graphs."""
    try:
        runtime_for_format(name)
    except ValueError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
