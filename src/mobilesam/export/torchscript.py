"""TorchScript export: the phone contract's encoder and decoders (`export.mobile`) as traced, frozen modules.

`torch.jit.load` in Python and LibTorch's C++ `torch::jit::load` read the
files as they are. The decoders are traced on a batch of two prompts with
different mask inputs, so the trace records the general per-prompt path of
`MaskDecoder.prepare_image` (a one-prompt trace would bake in the shortcut that
shares the first prompt's dense embedding), and the prompt count and the
number of points stay free: each trace is checked against eager torch on
other batch sizes and point counts before it is saved.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ..atomic import atomic_path
from ..modeling import Sam
from .check import check_against_eager, run_once
from .mobile import LowResDecoder, PixelEncoder, decoder_inputs, example_inputs, mobile_graphs
from .sidecar import write_phone_sidecar

FILES = {"encoder": "encoder.pt", "decoder": "decoder.pt", "decoder_single": "decoder_single.pt"}


def export_torchscript(
    model: Sam,
    out: str | Path,
    *,
    model_name: str,
    weights: str | Path | None = None,
    quantize: str | None = None,
) -> dict[str, Path]:
    """Write `out`: encoder.pt, decoder.pt (four masks), decoder_single.pt (one mask per prompt), metadata.json.

    Each module is traced, frozen, checked against eager torch on shapes it was
    not traced on, and saved atomically; the folder runs once in the torchscript
    runtime before this returns.

    Args:
        model: The model, on CPU; it is put in eval mode.
        out: Folder to write into (created if needed; files are replaced atomically).
        model_name: Registry name ("vit_t"), recorded in the sidecar.
        weights: Checkpoint the weights came from, whose SHA-256 goes into the sidecar; None for random weights.
        quantize: Must be None: the format has no reduced-precision encoder.

    Returns:
        Role ("encoder", "decoder", "decoder_single", "metadata") -> path.

    Raises:
        ValueError: `quantize` is given.
        RuntimeError: A trace does not reproduce eager torch on other prompt shapes.
    """
    if quantize is not None:
        raise ValueError(f"the torchscript format has no {quantize!r} encoder; it writes fp32 modules only")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = model.cpu().eval()
    examples = example_inputs(model, num_points=3)
    paths = {role: out / name for role, name in FILES.items()}
    image, image_size = examples["encoder"]
    # Checked on another image size, so a trace that baked the example's size in fails here.
    encoder = _trace(PixelEncoder(model).eval(), (image, image_size), [(image, image_size.flip(0))])
    _save(encoder, paths["encoder"])
    embedding = examples["decoder"][0]
    for role, single in (("decoder", False), ("decoder_single", True)):
        # Traced on 2 prompts with different masks (the per-prompt path); checked on 1 prompt of 1 point, 3 of 5.
        checks = [
            decoder_inputs(embedding, 1, 1, seed=1, with_mask=False),
            decoder_inputs(embedding, 3, 5, seed=2, with_mask=True),
        ]
        decoder = _trace(
            LowResDecoder(model, single_mask=single).eval(), decoder_inputs(embedding, 2, 3, seed=0, with_mask=True), checks
        )
        _save(decoder, paths[role])
    paths["metadata"] = write_phone_sidecar(
        out,
        model,
        export_format="torchscript",
        model_name=model_name,
        weights=weights,
        graphs=mobile_graphs(FILES["encoder"], FILES["decoder"], FILES["decoder_single"]),
        torchscript={"method": "torch.jit.trace, torch.jit.freeze"},
    )
    run_once(out)
    return paths


def _trace(
    module: nn.Module, example: tuple[torch.Tensor, ...], checks: Sequence[tuple[torch.Tensor, ...]]
) -> torch.jit.ScriptModule:
    """`module` traced on `example` and frozen, after checking the frozen module against eager torch on `checks`.

    torch's own trace check compares graphs, which differ across batch sizes by
    design here (`MaskDecoder` takes shortcuts for one prompt); the outputs must not.

    Raises:
        RuntimeError: An output differs from eager torch (`check_against_eager`).
    """
    with torch.no_grad(), warnings.catch_warnings():
        # The tracer warns at every shape-dependent branch; the checks below are what decides.
        warnings.simplefilter("ignore")
        frozen = torch.jit.freeze(torch.jit.trace(module, example, check_trace=False).eval())
    check_against_eager(module, frozen, checks)
    return frozen


def _save(module: torch.jit.ScriptModule, path: Path) -> None:
    with atomic_path(path) as tmp, warnings.catch_warnings():
        # Writing TorchScript is this format's whole point; torch's notice that it is deprecated says nothing new.
        warnings.filterwarnings("ignore", r"`torch\.jit\.save` is deprecated", FutureWarning)
        torch.jit.save(module, str(tmp))
