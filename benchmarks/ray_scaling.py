"""Labeling throughput on Ray with 1 and 2 workers (one thread each), beside the local run, same images, same run.

    python benchmarks/ray_scaling.py [--images 48] [--repeats 2] [--checkpoint mobile_sam.pt] [--backend auto]
                                     [--usd-per-cpu-hour 0.045]

Each run labels `--images` photos of 480x640 with `mobilesam predict`'s
defaults (one point per image; png and overlay). Throughput is the steady
state, read off the times the images' last outputs were written: images
after the first one per worker, over the time from its completion to the
last one's. So the start (Ray's actors, each loading the model) drops out;
it is shown apart. Two local runs at once, in processes of their own, show
what two workers can gain on the machine at all: on some (virtual) CPUs two
cores share the units that one engine's kernels saturate. The best of `--repeats` runs counts (other processes on
the machine only ever slow a run down). Without a checkpoint the model is
MobileSAM's architecture with seeded random weights: the same work per image
as the real one. The Ray runs use a local instance with 2 CPUs. The last
column prices a million images at the measured time per image and worker
(one CPU each) at `--usd-per-cpu-hour` (default: about an on-demand x86
vCPU-hour at the large clouds; check yours).
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from mobilesam.backends import make_backend
from mobilesam.bench import machine_summary
from mobilesam.distributed import ImageRef, find_images, label
from mobilesam.io.sources import find_jobs
from mobilesam.labeling import RunOptions, label_images
from mobilesam.prompts import make_prompt
from mobilesam.registry import build_sam, load_sam
from mobilesam.tasks import PromptTask, job_segmenter
from mobilesam.weights import save_checkpoint

# The image helpers and seeded weights live with the tests.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from images import generated_image, sample_images
from reference import randomize

FORMATS = ("png", "overlay")
TASK = PromptTask((make_prompt([[100, 80]], [1]),))


def _photos(folder: Path, count: int) -> Path:
    """`count` images of 480x640: the sample photos, then generated ones."""
    folder.mkdir(parents=True)
    photos = [Image.fromarray(array).convert("RGB").resize((640, 480)) for array in sample_images().values()]
    for index in range(count):
        image = photos[index] if index < len(photos) else Image.fromarray(generated_image(480, 640, seed=index))
        image.save(folder / f"image_{index:03d}.png")
    return folder


def _local(checkpoint: str, backend: str, jobs: list, out: Path) -> float:
    """Start time of the local run (one thread) over `jobs`, run as `mobilesam predict` runs it."""
    started = time.time()
    torch.set_num_threads(1)
    sam = load_sam(checkpoint)
    segment = TASK.segmenter(sam, make_backend(backend, sam, threads=1))
    summary = label_images(jobs, job_segmenter(segment), out, RunOptions(FORMATS, overwrite=True, progress=False))
    _check(summary.written, len(jobs), summary.failures)
    return started


def _two_processes(checkpoint: str, backend: str, jobs: list, out: Path) -> float:
    """Start time of two local runs at once, in processes of their own, over half of `jobs` each.

    No Ray: what two workers can gain on this machine at best.
    """
    started = time.time()
    context = multiprocessing.get_context("spawn")
    halves = [context.Process(target=_local, args=(checkpoint, backend, jobs[i::2], out / f"half {i}")) for i in range(2)]
    for process in halves:
        process.start()
    for process in halves:
        process.join()
    if any(process.exitcode for process in halves):
        raise SystemExit("a local run in a process of its own failed")
    return started


def _ray(checkpoint: str, backend: str, refs: list[ImageRef], out: Path, workers: int) -> float:
    """Start time of a Ray run with `workers` one-thread actors over `refs`."""
    started = time.time()
    options = RunOptions(FORMATS, overwrite=True, progress=False, model=checkpoint, backend=backend, workers=workers)
    summary = label(refs, TASK, out, options)
    _check(summary.written, len(refs), summary.failures)
    return started


def _check(written: int, expected: int, failures: list) -> None:
    if written != expected or failures:
        raise SystemExit(f"a run wrote {written} of {expected} images; failures: {failures[:3]}")


def _steady_state(out: Path, started: float, workers: int) -> tuple[float, float]:
    """(images/s after each worker's first image, seconds from the start to the first image of the last worker).

    An image is done when its overlay, the last output written (the only JPEG), is.
    """
    done = sorted(path.stat().st_mtime for path in out.rglob("*.jpg"))  # (images,) wall times
    return (len(done) - workers) / (done[-1] - done[workers - 1]), done[workers - 1] - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--checkpoint", help="MobileSAM checkpoint (default: seeded random weights)")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--usd-per-cpu-hour", type=float, default=0.045)
    args = parser.parse_args()

    import ray

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        checkpoint = args.checkpoint or str(save_checkpoint(randomize(build_sam("vit_t"), seed=0), root / "vit_t.pt"))
        photos = _photos(root / "photos", args.images)
        jobs, refs = find_jobs(photos), find_images(photos)
        # Once before timing: a graph backend exports the model on first use.
        _local(checkpoint, args.backend, jobs[:1], root / "warm-up")
        ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
        runs = {
            "local": (1, lambda out: _local(checkpoint, args.backend, jobs, out)),
            "2 local processes, no Ray": (2, lambda out: _two_processes(checkpoint, args.backend, jobs, out)),
            "ray, 1 worker": (1, lambda out: _ray(checkpoint, args.backend, refs, out, 1)),
            "ray, 2 workers": (2, lambda out: _ray(checkpoint, args.backend, refs, out, 2)),
        }
        rates, starts = {}, {}
        for name, (workers, run) in runs.items():
            for repeat in range(args.repeats):
                out = root / "out" / f"{name} {repeat}"
                rate, start = _steady_state(out, run(out), workers)
                if rate > rates.get(name, 0):
                    rates[name], starts[name] = rate, start
        ray.shutdown()

    print(machine_summary())
    print(f"backend {args.backend}; {args.images} images of 480x640, predict with one point, {', '.join(FORMATS)}\n")
    print("| run | images/s | × local | × 1 worker | s per image per worker | first images after s | USD per million images |")
    print("|---|---|---|---|---|---|---|")
    for name, (workers, _) in runs.items():
        rate = rates[name]
        per_image = workers / rate
        usd = 1e6 * per_image / 3600 * args.usd_per_cpu_hour
        print(
            f"| {name} | {rate:.2f} | {rate / rates['local']:.2f} | {rate / rates['ray, 1 worker']:.2f} "
            f"| {per_image:.2f} | {starts[name]:.1f} | {usd:.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
