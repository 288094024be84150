"""Speed of each backend against a baseline, in one process, on the same input, interleaved.

Used by `mobilesam bench` and by `benchmarks/encoder.py` / `benchmarks/decoder.py`.
Runs alternate between the baseline and every backend, so load from other
processes hits all of them alike; each figure is a median. Peak memory
comes from `mobilesam.probe`, one fresh process per backend.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .backends import Backend, TorchBackend, make_backend
from .cpu import cpu_info
from .fidelity import Agreement, compare_masks, demo_image, demo_prompts, protocol_images
from .modeling import Sam
from .predictor import SamPredictor
from .probe import peak_rss_mib

# The first row of `mobilesam bench`'s tables.
BASELINE = "torch eager"


@dataclass
class Row:
    """One line of a benchmark table; `None` where a figure was not measured."""

    name: str
    encoder_ms: float | None = None
    encoder_ratio: float | None = None
    embedding_error: float | None = None
    agreement: Agreement | None = None
    decoder_ms: float | None = None
    decoder_ratio: float | None = None
    peak_rss_mib: float | None = None


def median_seconds(calls: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median wall time of each call: `warmup` untimed rounds, then `repeats` rounds, interleaved."""
    for _ in range(warmup):
        for call in calls.values():
            call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(seconds) for name, seconds in times.items()}


def bench_encoder(
    model: Sam,
    baseline: Callable[[torch.Tensor], torch.Tensor],
    backends: list[Backend],
    images: list[np.ndarray],
    repeats: int,
    baseline_name: str = "reference",
) -> list[Row]:
    """Encoder time on `images[0]` and accuracy on every image, per backend against `baseline`.

    Accuracy: the largest absolute embedding difference from `baseline`'s, and
    the agreement of the engine's masks with eager fp32 torch's by `fidelity`'s
    protocol on `images` (`engine_agreement`).
    """
    predictor = SamPredictor(model, backend="torch")
    inputs = [model.preprocess(_model_input(predictor, image)) for image in images]
    with torch.inference_mode():
        calls = {"baseline": lambda: baseline(inputs[0])}
        calls.update({backend.name: (lambda b=backend: b.embed(inputs[0])) for backend in backends})
        seconds = median_seconds(calls, repeats)
        rows = [Row(baseline_name, encoder_ms=1000 * seconds["baseline"], encoder_ratio=1.0)]
        expected = [baseline(x) for x in inputs]
        errors = {b.name: max((b.embed(x) - want).abs().max().item() for x, want in zip(inputs, expected)) for b in backends}
    named_images = {str(index): image for index, image in enumerate(images)}
    for backend in backends:
        ms = 1000 * seconds[backend.name]
        rows.append(
            Row(
                backend.name,
                encoder_ms=ms,
                encoder_ratio=rows[0].encoder_ms / ms,
                embedding_error=errors[backend.name],
                agreement=engine_agreement(model, backend, named_images),
            )
        )
    return rows


def bench_decoder(
    model: Sam,
    baseline: Callable[[], object],
    backends: list[Backend],
    image: np.ndarray,
    repeats: int,
    prompts_per_round: int = 20,
) -> dict[str, float]:
    """Milliseconds per prompt of `SamPredictor.predict` (decoder + upscaling to the image), per backend.

    `baseline` predicts one prompt on an image already set; each backend runs
    the same click through `SamPredictor` on the torch embedding of `image`.
    """
    prompt = demo_prompts(*image.shape[:2])[0]
    embedding_source = SamPredictor(model, backend="torch")
    embedding_source.set_image(image)
    kept = embedding_source.embedding
    calls = {"baseline": lambda: [baseline() for _ in range(prompts_per_round)]}
    for backend in backends:
        predictor = SamPredictor(model, backend)
        predictor.set_embedding(kept)
        calls[backend.name] = lambda p=predictor: [p.predict(**prompt) for _ in range(prompts_per_round)]
    seconds = median_seconds(calls, repeats)
    return {name: 1000 * s / prompts_per_round for name, s in seconds.items()}


def run_benchmark(
    model: Sam,
    backend_names: list[str],
    *,
    onnx_dir: Path | None = None,
    repeats: int = 5,
    threads: int | None = None,
    image: np.ndarray | None = None,
    rss_model: str | None = None,
) -> str:
    """The `mobilesam bench` report: encoder and decoder tables against our eager torch backend.

    The baseline has the reference's numerics; the original package is only
    a test oracle, so `benchmarks/encoder.py` and `benchmarks/decoder.py`
    time that one. With `rss_model` (what `load_sam` takes), also the peak RSS
    of one image prediction per backend, each in a fresh process (`mobilesam.probe`;
    the ONNX backends through the torch-free `OnnxPredictor`).

    Raises:
        ValueError: An unknown backend.
    """
    model = model.cpu().eval()
    backends = [make_backend(name, model, onnx_dir=onnx_dir, threads=threads) for name in backend_names]
    image = demo_image() if image is None else image
    rows = bench_encoder(model, TorchBackend(model).embed, backends, [image], repeats, baseline_name=BASELINE)
    baseline_predictor = SamPredictor(model, backend="torch")
    baseline_predictor.set_image(image)
    prompt = demo_prompts(*image.shape[:2])[0]
    decoder_ms = bench_decoder(model, lambda: baseline_predictor.predict(**prompt), backends, image, repeats)
    for row in rows:
        row.decoder_ms = decoder_ms["baseline" if row.name == BASELINE else row.name]
        row.decoder_ratio = decoder_ms["baseline"] / row.decoder_ms
        if rss_model is not None:
            folder = next((backend.folder for backend in backends if backend.name == row.name), None)
            row.peak_rss_mib = peak_rss_mib(rss_model, probe_name(row.name), folder, threads)
    lines = [
        f"machine: {machine_summary()}",
        f"baseline ({BASELINE}): our eager fp32 torch backend, the reference's numerics; "
        "benchmarks/encoder.py and benchmarks/decoder.py time the original mobile_sam",
    ]
    if rss_model is not None:
        lines.append(f"peak RSS of importing torch and mobilesam alone: {peak_rss_mib(rss_model, 'import-only'):.0f} MiB")
    return "\n".join(lines) + "\n\n" + format_table(rows)


def machine_summary() -> str:
    """The CPU, its instruction sets and the torch kernels in use: the header line of every benchmark."""
    return (
        f"{cpu_info().describe()}; torch {torch.__version__} "
        f"(ATen kernels {torch.backends.cpu.get_cpu_capability()}), {torch.get_num_threads()} threads"
    )


def format_table(rows: list[Row]) -> str:
    """A markdown table of `rows`; blanks where a figure was not measured."""
    header = (
        "| backend | encoder ms | × ref | max abs Δ embedding | masks = fp32 | lowest mask IoU "
        "| decoder ms/prompt | × ref | peak RSS MiB |"
    )
    lines = [header, "|" + "---|" * 9]
    for r in rows:
        cells = [
            r.name,
            _fmt(r.encoder_ms, "{:.0f}"),
            _fmt(r.encoder_ratio, "{:.2f}"),
            _fmt(r.embedding_error, "{:.1e}"),
            _fmt(None if r.agreement is None else 100 * r.agreement.pixels_equal, "{:.2f}%"),
            _fmt(None if r.agreement is None else r.agreement.min_iou, "{:.4f}"),
            _fmt(r.decoder_ms, "{:.1f}"),
            _fmt(r.decoder_ratio, "{:.2f}"),
            _fmt(r.peak_rss_mib, "{:.0f}"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def probe_name(row_name: str) -> str:
    """What `peak_rss_mib` runs for a table row of ours: the backend of that name; the baseline is torch."""
    return "torch" if row_name == BASELINE else row_name


def _fmt(value: float | None, spec: str) -> str:
    return "" if value is None else spec.format(value)


def _model_input(predictor: SamPredictor, image: np.ndarray) -> torch.Tensor:
    """(1, 3, h, w) resized, not normalised: what `set_torch_image` takes."""
    resized = predictor.transform.apply_image(image)
    return torch.as_tensor(resized).permute(2, 0, 1).contiguous()[None]


def engine_agreement(model: Sam, backend: Backend, images: dict[str, np.ndarray] | None = None) -> Agreement:
    """The agreement of `backend`'s masks with eager fp32 torch's on `model`, by the protocol.

    Args:
        model: The model both run.
        backend: The engine measured, made for `model`.
        images: The images; default `protocol_images()`.
    """
    expected, measured = SamPredictor(model, backend="torch"), SamPredictor(model, backend=backend)
    want_masks: list[np.ndarray] = []
    got_masks: list[np.ndarray] = []
    for image in (protocol_images() if images is None else images).values():
        expected.set_image(image)
        measured.set_image(image)
        for prompt in demo_prompts(*image.shape[:2]):
            want_masks.extend(expected.predict(**prompt)[0])
            got_masks.extend(measured.predict(**prompt)[0])
    return compare_masks(want_masks, got_masks)


def export_agreement(
    model: Sam,
    folder: str | Path,
    *,
    runtime: str | None = None,
    variant: str | None = None,
    images: dict[str, np.ndarray] | None = None,
) -> tuple[Agreement, float]:
    """How an export of `model`, run in its runtime, agrees with eager fp32 torch, by the protocol.

    Args:
        model: The model the folder was exported from.
        folder: Written by `mobilesam export` in a format a runtime here runs.
        runtime: Which runtime runs it (`runtime.RUNTIMES`); None: the folder's first.
        variant: A reduced-precision encoder of the folder ("int8", "fp16"); None: fp32.
        images: The images; default `protocol_images()`.

    Returns:
        The masks' agreement, and the largest absolute difference of an image embedding.
    """
    from .runtime import OnnxPredictor

    expected, measured = SamPredictor(model, backend="torch"), OnnxPredictor(folder, runtime=runtime, variant=variant)
    want_masks: list[np.ndarray] = []
    got_masks: list[np.ndarray] = []
    embedding_error = 0.0
    for image in (protocol_images() if images is None else images).values():
        expected.set_image(image)
        measured.set_image(image)
        embedding_error = max(embedding_error, float(np.abs(expected.features.numpy() - measured.features).max()))
        for prompt in demo_prompts(*image.shape[:2]):
            want_masks.extend(expected.predict(**prompt)[0])
            got_masks.extend(measured.predict(**prompt)[0])
    return compare_masks(want_masks, got_masks), embedding_error
