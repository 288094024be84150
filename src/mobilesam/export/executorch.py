"""The `executorch` export format: the phone graphs (`export.mobile`) as ExecuTorch programs delegated to XNNPACK.

Each graph is captured with `torch.export.export`, lowered by
`executorch.exir.to_edge_transform_and_lower` with the XNNPACK partitioner, and
written as a .pte program, which ExecuTorch's runtime on Android and iOS (and its
Python bindings here) loads as it is.

What is written (`export_executorch`):

- encoder.pte: `PixelEncoder`, static (1, S, S, 3) input, fp32.
- decoder.pte, decoder_single.pte: `LowResDecoder` (four masks; SAM's single-mask
  choice), fp32, one prompt per run (B = 1), and any number of points N from 1 to
  `MAX_POINTS` in the same program: N is a dynamic dimension of `torch.export`, and
  the runtime resizes the inputs. No padding is needed (SAM attends to padding
  points, so padding to a fixed N would change the masks); the app passes its points
  (with SAM's one padding point when there is no box, see `APP_CONTRACT`).
  XNNPACK takes the transformer's reshapes with a dynamic N only partly, so some
  small token reshapes run in ExecuTorch's portable kernels between XNNPACK blocks.
- encoder.int8.pte (`quantize="int8"`): the image encoder's convolutions and linear
  layers statically quantised by the PT2E flow with ExecuTorch's XNNPACK quantizer
  (symmetric int8, per-channel weights, per-tensor inputs whose ranges are calibrated
  on `io.samples`' photos), lowered to XNNPACK; norms, the attention products and softmax, adds and
  the pixel normalisation stay fp32.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..atomic import write_bytes_atomic
from ..io.samples import calibration_photos
from ..modeling import Sam
from ..runtime.layout import graph_entry
from ..transforms import ResizeLongestSide, pad_pixels
from .check import check_against_eager, run_once
from .mobile import (
    ENCODER_INPUTS,
    ENCODER_OUTPUTS,
    LowResDecoder,
    PixelEncoder,
    decoder_inputs,
    example_inputs,
    mobile_graphs,
)
from .sidecar import write_phone_sidecar

FILES = {
    "encoder": "encoder.pte",
    "decoder": "decoder.pte",
    "decoder_single": "decoder_single.pte",
    "encoder.int8": "encoder.int8.pte",
}
QUANTIZE = ("int8",)
# The point counts N the decoders take; the upper bound sizes the memory XNNPACK plans for the prompt tokens.
MIN_POINTS, MAX_POINTS = 1, 16
# The reduced-precision encoder, for the sidecar.
INT8_RECIPE = (
    "static int8 convolutions and linear layers of the image encoder (PT2E with ExecuTorch's XNNPACKQuantizer: "
    "symmetric per-channel int8 weights, per-tensor int8 inputs calibrated on {photos} photos); the rest in fp32"
)


def export_executorch(
    model: Sam,
    out: str | Path,
    *,
    model_name: str,
    weights: str | Path | None = None,
    quantize: str | None = None,
) -> dict[str, Path]:
    """Write `model`'s phone graphs as XNNPACK-delegated ExecuTorch programs into folder `out`, with a sidecar, and run them once.

    The decoders are checked against eager torch on other point counts before
    they are saved, so a lowering that fixed N fails here.

    Args:
        model: The model, on CPU; it is put in eval mode.
        out: The folder to write (created if needed; each file is replaced atomically).
        model_name: Registry name ("vit_t"), recorded in the sidecar.
        weights: Checkpoint the weights came from (its hash goes into the sidecar).
        quantize: "int8" to add `encoder.int8.pte` beside the fp32 encoder, calibrated on `io.samples`' photos.

    Returns:
        Role ("encoder", "decoder", "decoder_single", "encoder.int8", "metadata") -> path.

    Raises:
        ImportError: executorch is not installed.
        ValueError: Unknown `quantize`.
        RuntimeError: A lowered decoder departs from eager torch.
    """
    if quantize is not None and quantize not in QUANTIZE:
        raise ValueError(f"unknown executorch quantisation {quantize!r}; known: {', '.join(QUANTIZE)}")
    try:
        from executorch import version
    except ImportError as err:
        raise ImportError(f"the executorch format needs executorch: pip install 'mobilesam[executorch]' ({err})") from None
    model = model.cpu().eval()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    examples = example_inputs(model)
    encoder = PixelEncoder(model).eval()
    paths = {"encoder": write_bytes_atomic(out / FILES["encoder"], lower(_export(encoder, examples["encoder"])))}
    for role, single in (("decoder", False), ("decoder_single", True)):
        decoder = LowResDecoder(model, single_mask=single).eval()
        program = lower(_export(decoder, examples["decoder"], dynamic_points=True))
        _check_decoder(decoder, program, examples["decoder"][0])
        paths[role] = write_bytes_atomic(out / FILES[role], program)
    graphs = mobile_graphs(FILES["encoder"], FILES["decoder"], FILES["decoder_single"], batch=1)
    facts: dict[str, Any] = {"executorch": version.__version__, "decoder_points": {"min": MIN_POINTS, "max": MAX_POINTS}}
    if quantize is not None:
        photos = calibration_photos()
        quantized = quantized_encoder(encoder, examples["encoder"], calibration_pixels(photos, model.img_size))
        program = lower(quantized, delegate_pads=False)
        paths["encoder.int8"] = write_bytes_atomic(out / FILES["encoder.int8"], program)
        graphs["encoder.int8"] = graph_entry(FILES["encoder.int8"], ENCODER_INPUTS, ENCODER_OUTPUTS, layout="pixels")
        facts["quantize"] = {"encoder.int8": INT8_RECIPE.format(photos=len(photos))}
    paths["metadata"] = write_phone_sidecar(
        out, model, export_format="executorch", model_name=model_name, weights=weights, graphs=graphs, **facts
    )
    run_once(out)
    if quantize is not None:
        run_once(out, variant=quantize)
    return paths


def lower(program: torch.export.ExportedProgram, *, delegate_pads: bool = True) -> bytes:
    """`program` lowered to ExecuTorch with the XNNPACK partitioner: the bytes of a .pte file.

    Args:
        delegate_pads: Let XNNPACK run constant pads. Off for int8 programs: executorch 1.5
            turns a pad of a dequantised tensor into an int8 pad that XNNPACK then refuses at
            load time ("Failed to create StaticConstantPad node"); those pads run in
            ExecuTorch's portable kernels, in fp32.
    """
    from executorch.backends.xnnpack.partition.config import ALL_PARTITIONER_CONFIGS
    from executorch.backends.xnnpack.partition.config.generic_node_configs import ConstantPadConfig
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    configs = [config for config in ALL_PARTITIONER_CONFIGS if delegate_pads or config is not ConstantPadConfig]
    edge = to_edge_transform_and_lower(
        program,
        partitioner=[XnnpackPartitioner(configs=configs)],
    )
    return edge.to_executorch().buffer


def quantized_encoder(
    encoder: nn.Module, example: tuple[torch.Tensor, ...], calibration: Iterator[tuple[torch.Tensor, torch.Tensor]]
) -> torch.export.ExportedProgram:
    """`encoder` (a `PixelEncoder`) with its image encoder quantised to static int8 by PT2E, exported again.

    Args:
        example: Inputs to capture the graph with.
        calibration: Encoder inputs whose activation ranges set the int8 scales.
    """
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    # Convolutions and linear layers only: nearly all of the arithmetic. Quantising the adds too, as
    # XNNPACKQuantizer does by default, leaves a reshape between int8 tensors of different scales in
    # TinyViT's windowed attention (after `contiguous`, which passes no scale on), and XNNPACK refuses
    # it at load time ("Failed to create squeeze node"). Norms, softmax and the pixel normalisation stay fp32.
    config = get_symmetric_quantization_config(is_per_channel=True)
    quantizer = XNNPACKQuantizer().set_operator_type(torch.ops.aten.conv2d.default, config)
    quantizer.set_operator_type(torch.ops.aten.linear.default, config)
    prepared = prepare_pt2e(_export(encoder, example).module(), quantizer)
    with torch.no_grad():
        for inputs in calibration:
            prepared(*inputs)
    return _export(convert_pt2e(prepared), example)


def calibration_pixels(photos: list[np.ndarray], side: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """`PixelEncoder` inputs (image, image_size) of (H, W, 3) uint8 RGB `photos`, as the app makes them."""
    transform = ResizeLongestSide(side)
    for photo in photos:
        image, image_size = pad_pixels(transform.apply_image(photo), side)
        yield torch.from_numpy(image), torch.from_numpy(image_size)


def _export(
    module: nn.Module, example: tuple[torch.Tensor, ...], *, dynamic_points: bool = False
) -> torch.export.ExportedProgram:
    """`torch.export.export` of `module` on `example`; with `dynamic_points`, a decoder whose N is free in `MIN_POINTS..MAX_POINTS`."""
    shapes = None
    if dynamic_points:
        points = torch.export.Dim("num_points", min=MIN_POINTS, max=MAX_POINTS)
        shapes = ({}, {1: points}, {1: points}, {}, {})
    with torch.no_grad():
        return torch.export.export(module, example, dynamic_shapes=shapes)


def _check_decoder(decoder: nn.Module, program: bytes, embedding: torch.Tensor) -> None:
    """Run the lowered `program` in ExecuTorch on 1 and 5 points and compare with eager `decoder`.

    Raises:
        RuntimeError: The outputs differ (`check.check_against_eager`).
    """
    from executorch.runtime import Runtime

    method = Runtime.get().load_program(program).load_method("forward")
    checks = [
        decoder_inputs(embedding, 1, 1, seed=1, with_mask=False),
        decoder_inputs(embedding, 1, 5, seed=2, with_mask=True),
    ]
    check_against_eager(decoder, lambda *inputs: tuple(method.execute(inputs)), checks)
