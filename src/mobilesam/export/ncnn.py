"""The `ncnn` export format: the phone graphs (`export.mobile`) as ncnn .param/.bin pairs, converted by pnnx.

pnnx reads a TorchScript trace and writes ncnn's files. An ncnn Mat has at
most four axes and no batch axis, so the encoder gets an ncnn-friendly twin with the same arithmetic: its window
attention splits windows with 6-D reshapes that ncnn cannot hold, and the model
family's `four_axis_encoder` (TinyViT's: `mobilesam.four_axis_encoder`) keeps a
leading 1 and at most four more axes.

The decoders take any number of points N (pnnx is given two N; ncnn runs
any). Weights stay fp32 (pnnx's `fp16=0`).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from ..atomic import atomic_path
from ..families import family_of
from ..modeling import Sam
from ..registry import config_of
from ..weights import sha256_file
from .check import run_once
from .mobile import LowResDecoder, PixelEncoder, example_inputs, mobile_graphs
from .sidecar import write_phone_sidecar

GRAPH_STEMS = {"encoder": "encoder.ncnn", "decoder": "decoder.ncnn", "decoder_single": "decoder_single.ncnn"}
# pnnx learns which axes are dynamic from two example shapes: the decoders are traced at
# two points (a box) and told about five.
TRACE_POINTS, OTHER_POINTS = 2, 5
# pnnx's log lines for an operator it could not lower to an ncnn layer ("ignore Tensor.fill ..."), and for one
# it lowered without the shapes it needs ("permute 5-rank tensor is not supported yet!").
_UNLOWERED = re.compile(r"^ignore (\S+)", re.MULTILINE)
_UNSUPPORTED = re.compile(r"^.*(?:not supported|exceeds ncnn).*$", re.MULTILINE)


def ncnn_pixel_encoder(model: Sam) -> PixelEncoder:
    """`PixelEncoder` over the copy of `model`'s encoder that its family rewrites for at most 4-D tensors.

    Raises:
        ValueError: The family has no such rewrite (ViT's windows and relative positions need 6-D tensors).
    """
    family = family_of(config_of(model).encoder)
    if family.four_axis_encoder is None:
        raise ValueError(
            f"the ncnn format converts TinyViT encoders (vit_t), not {family.name}: "
            "its window attention needs 6-D tensors and an ncnn Mat has at most 4 axes"
        )
    encoder = PixelEncoder(model)
    encoder.image_encoder = family.four_axis_encoder(model)
    return encoder


def export_ncnn(
    model: Sam, out: str | Path, *, model_name: str, weights: str | Path | None = None, quantize: None = None
) -> dict[str, Path]:
    """Write `model`'s phone graphs as ncnn files into folder `out`, with a sidecar, and run them once in ncnn.

    Args:
        model: The model, on CPU; it is put in eval mode. Its encoder must be TinyViT (vit_t): pnnx
            cannot fit ViT's window partition into ncnn's four axes.
        out: Folder to write into (created if needed; each file is replaced atomically).
        model_name: Registry name ("vit_t"), recorded in the sidecar.
        weights: Checkpoint the weights came from (its SHA-256 goes into the sidecar).
        quantize: None (the format has no reduced-precision encoder; ncnn computes in fp16 by
            itself on CPUs that can, which `runtime.ncnn.NcnnSessions` turns off).

    Returns:
        Role ("encoder", "decoder", "decoder_single", "metadata") -> path; each .param's
        weights lie beside it as .bin.

    Raises:
        ImportError: pnnx or ncnn is not installed.
        ValueError: `quantize` is not None, or the encoder is not TinyViT.
        RuntimeError: pnnx fails, or leaves an operator ncnn has no layer for.
    """
    if quantize is not None:
        raise ValueError(f"the ncnn format has no {quantize!r} encoder; its quantize options: none")
    try:
        import ncnn
        import pnnx
    except ImportError as err:
        raise ImportError(f"the ncnn format needs pnnx and ncnn: pip install 'mobilesam[ncnn]' ({err})") from None
    model = model.cpu().eval()
    examples, wider = example_inputs(model, TRACE_POINTS), example_inputs(model, OTHER_POINTS)
    # The decoders get a `Sam` without the image encoder: a trace wraps every submodule of its module, used or not.
    prompt_half = Sam(nn.Identity(), model.prompt_encoder, model.mask_decoder)
    modules = {
        "encoder": (ncnn_pixel_encoder(model), examples["encoder"], None),
        "decoder": (LowResDecoder(prompt_half), examples["decoder"], wider["decoder"]),
        "decoder_single": (LowResDecoder(prompt_half, single_mask=True), examples["decoder"], wider["decoder"]),
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    with tempfile.TemporaryDirectory(dir=out, prefix=".pnnx-") as scratch:
        for role, (module, example, other) in modules.items():
            paths[role] = _convert(pnnx.EXEC_PATH, module, example, other, Path(scratch) / role, out / GRAPH_STEMS[role])
    graphs = mobile_graphs(paths["encoder"].name, paths["decoder"].name, paths["decoder_single"].name, batch=1)
    for role, entry in graphs.items():
        # An ncnn graph is two files: the app loads the .bin beside each .param.
        weights_file = paths[role].with_suffix(".bin")
        entry.update(bin=weights_file.name, bin_sha256=sha256_file(weights_file))
    paths["metadata"] = write_phone_sidecar(
        out,
        model,
        export_format="ncnn",
        model_name=model_name,
        weights=weights,
        graphs=graphs,
        pnnx=pnnx.__version__,
        ncnn=ncnn.__version__,
    )
    run_once(out)
    return paths


def _convert(
    pnnx_executable: str,
    module: nn.Module,
    example: tuple[torch.Tensor, ...],
    other: tuple[torch.Tensor, ...] | None,
    scratch: Path,
    target: Path,
) -> Path:
    """Trace `module` on `example`, convert it with pnnx in `scratch`, move its .bin then .param to `target`.

    Returns:
        The .param path.
    """
    scratch.mkdir()
    with torch.no_grad(), warnings.catch_warnings():
        # The tracer warns about Python numbers taken from shapes (the graph is checked by running it in ncnn), and
        # torch about TorchScript's deprecation: pnnx reads TorchScript.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", r"`torch\.jit\.trace", FutureWarning)
        traced = torch.jit.trace(module.eval(), example, check_trace=False)
    traced.save(os.fspath(scratch / "graph.pt"))
    command = [pnnx_executable, "graph.pt", f"inputshape={_shapes(example)}", "fp16=0"]
    if other is not None:
        command.append(f"inputshape2={_shapes(other)}")
    done = subprocess.run(command, cwd=scratch, capture_output=True, text=True, check=False)
    log = done.stdout + done.stderr
    param, weights_file = scratch / "graph.ncnn.param", scratch / "graph.ncnn.bin"
    if done.returncode != 0 or not param.is_file() or not weights_file.is_file():
        raise RuntimeError(f"pnnx failed on the {target.name} graph (exit {done.returncode}):\n{log[-2000:]}")
    problems = sorted(set(_UNLOWERED.findall(log)) | set(_UNSUPPORTED.findall(log)))
    if problems:
        raise RuntimeError(f"pnnx could not lower the {target.name} graph to ncnn layers: {'; '.join(problems)}")
    # A reader looks for the .param: move the weights in first, so it never finds a .param without them.
    for source, suffix in ((weights_file, ".bin"), (param, ".param")):
        with atomic_path(target.with_name(target.name + suffix)) as tmp:
            shutil.move(source, tmp)
    return target.with_name(target.name + ".param")


def _shapes(inputs: tuple[torch.Tensor, ...]) -> str:
    """pnnx's `inputshape` value: "[1,256,256,3]f32,[2]f32"."""
    return ",".join("[" + ",".join(str(size) for size in tensor.shape) + "]f32" for tensor in inputs)
