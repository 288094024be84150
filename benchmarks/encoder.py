"""Image encoder speed per backend against the reference `mobile_sam`, same run, same input.

    python benchmarks/encoder.py [--checkpoint mobile_sam.pt] [--threads 2] [--repeats 5]
        [--backend torch --backend openvino-bf16 ...] [--onnx-dir DIR] [--no-rss]

Without a checkpoint both run at the same seeded random weights. The graph
backends (onnx*, openvino*) use `--onnx-dir` (a `mobilesam export` of the same
checkpoint) or the export cache, which makes what is missing on first use,
untimed (openvino-int8's NNCF calibration takes about a minute). Runs are interleaved
(reference, then each backend, repeated) after a warm-up and the median is
shown, timed on the astronaut photo. Accuracy is `mobilesam.fidelity`'s
protocol, the one `auto` and `half` choose by: the largest embedding
difference, the share of mask pixels equal to fp32 torch's and the lowest
IoU of one mask with its fp32 twin, the engine run end to end.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

from mobilesam import load_sam
from mobilesam.backends import BACKENDS, auto_backend_name, make_backend
from mobilesam.backends.auto import runs_well_here
from mobilesam.bench import bench_encoder, format_table, machine_summary, probe_name
from mobilesam.cpu import cpu_info
from mobilesam.fidelity import PROTOCOL, protocol_images
from mobilesam.probe import peak_rss_mib, peak_rss_of
from mobilesam.registry import model_name
from mobilesam.weights import save_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from reference import mobile_sam, paired_models, sync_reference


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="MobileSAM checkpoint (default: seeded random weights)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--backend", action="append", choices=BACKENDS, help="repeat for several (default: all)")
    parser.add_argument("--onnx-dir", type=Path, help="a `mobilesam export` of the same checkpoint (default: the export cache)")
    parser.add_argument("--no-rss", action="store_true", help="skip the peak-RSS probes")
    return parser.parse_args()


def setup(args: argparse.Namespace, workdir: Path):
    """(ours, reference, checkpoint path, backends): the same weights everywhere."""
    torch.set_num_threads(args.threads)
    if args.checkpoint:
        ours = load_sam(args.checkpoint).eval()
        reference = sync_reference(mobile_sam.sam_model_registry[model_name(ours)](), ours)
        checkpoint = Path(args.checkpoint)
    else:
        ours, reference = paired_models("vit_t", seed=0)
        checkpoint = save_checkpoint(ours, workdir / "random_vit_t.pt")
    names = args.backend or [name for name in BACKENDS if runs_well_here(name)]
    backends = [make_backend(name, ours, onnx_dir=args.onnx_dir, threads=args.threads) for name in names]
    return ours, reference, checkpoint, backends


def main() -> int:
    args = parse_args(__doc__)
    with tempfile.TemporaryDirectory() as tmp:
        ours, reference, checkpoint, backends = setup(args, Path(tmp))
        images = list(protocol_images().values())
        rows = bench_encoder(ours, reference.image_encoder, backends, images, args.repeats)
        if not args.no_rss:
            reference_probe = [
                sys.executable,
                str(Path(__file__).with_name("reference_rss.py")),
                str(checkpoint),
                str(args.threads),
            ]
            for row in rows:
                if row.name == "reference":
                    row.peak_rss_mib = peak_rss_of(reference_probe)
                else:
                    folder = next(backend.folder for backend in backends if backend.name == row.name)
                    row.peak_rss_mib = peak_rss_mib(str(checkpoint), probe_name(row.name), folder, args.threads)
            print(f"peak RSS of importing torch and mobilesam alone: {peak_rss_mib(str(checkpoint), 'import-only'):.0f} MiB")
    print(f"machine: {machine_summary()}")
    print(
        f"encoder, 1024x1024 input, median of {args.repeats} "
        "(peak RSS: one image + one click, fresh process; onnx/openvino rows through OnnxPredictor, without torch)"
    )
    print(f"mask agreement: {PROTOCOL}")
    print(
        f"auto picks {auto_backend_name()} here, auto with half=True {auto_backend_name(half=True)} (CPU class {cpu_info().cpu_class})\n"
    )
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
