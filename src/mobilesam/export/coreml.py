"""Core ML export: the phone contract's graphs (`export.mobile`) as ML Program packages with fp16 compute.

Core ML runs only on Apple's systems, so here each package is converted and
validated (it loads, it declares the contract's inputs and outputs, its
weights are whole), never run.

- Minimum deployment target iOS 16 (macOS 13; opset CoreML6, iPhone 8 and
  later). The graphs convert for iOS 15 too, but iOS 16's opset is the first
  with the compressed-weight ops (`constexpr_lut_to_dense`,
  `constexpr_affine_dequantize`) that `coremltools.optimize` writes, so a
  package can be palettised or weight-quantised later on the same target.
- Converted from `torch.export`, not from `torch.jit.trace` as coremltools'
  guide still prefers: with numpy >= 2.4, coremltools 9.0 fails on the
  `aten::Int` nodes every trace of these graphs holds (apple/coremltools#2633,
  fixed after 9.0), while the `torch.export` frontend has no such node.
- The decoders take one prompt per run (batch 1; `GraphSessions` runs a batch
  row by row) and any number of points from 1 to `MAX_POINTS`: the point axis
  is a `ct.RangeDim`, never padded, as padding points change SAM's answer.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import struct
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import nn

from ..atomic import temporary_path
from ..modeling import Sam
from .check import check_against_eager
from .mobile import (
    DECODER_INPUTS,
    DECODER_OUTPUTS,
    ENCODER_INPUTS,
    ENCODER_OUTPUTS,
    LowResDecoder,
    PixelEncoder,
    decoder_inputs,
    example_inputs,
    mobile_graphs,
)
from .sidecar import write_phone_sidecar

FILES = {"encoder": "encoder.mlpackage", "decoder": "decoder.mlpackage", "decoder_single": "decoder_single.mlpackage"}
DEPLOYMENT_TARGET = "iOS16"
# Core ML's specification version of an iOS 16 program: a package below it would not be the program written here.
SPEC_VERSION = 7
# The most points (clicks, box corners, the padding point) one decoder run takes.
MAX_POINTS = 64
POINTS = "num_points"
# Where a package keeps its program; "@model_path" in weight references is this folder.
WEIGHTS_ROOT = "Data/com.apple.CoreML"
BLOB_SENTINEL = 0xDEADBEEF

# (name, shape) of a package's inputs or outputs; `POINTS` stands for the flexible point axis.
Feature = tuple[str, tuple[int | str, ...]]


def export_coreml(
    model: Sam,
    out: str | Path,
    *,
    model_name: str,
    weights: str | Path | None = None,
    quantize: str | None = None,
) -> dict[str, Path]:
    """Write `out`: encoder.mlpackage, decoder.mlpackage, decoder_single.mlpackage (fp16 ML Programs), metadata.json.

    Each graph is exported with `torch.export`, checked against eager torch on
    other point counts, converted, saved beside its target, validated
    (`validate_coreml_package`), and only then put in place.

    Args:
        model: The model, on CPU; it is put in eval mode.
        out: Folder to write into (created if needed; each package is replaced whole).
        model_name: Registry name ("vit_t"), recorded in the sidecar and the packages.
        weights: Checkpoint the weights came from, whose SHA-256 goes into the sidecar; None for random weights.
        quantize: Must be None: the packages compute in fp16 already.

    Returns:
        Role ("encoder", "decoder", "decoder_single", "metadata") -> path.

    Raises:
        ImportError: coremltools is not installed.
        ValueError: `quantize` is given.
        RuntimeError: An exported graph departs from eager torch, or a package does not declare the contract.
    """
    if quantize is not None:
        raise ValueError(f"the coreml format has no {quantize!r} encoder; its packages compute in fp16")
    ct = _coremltools()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = model.cpu().eval()
    examples = example_inputs(model, num_points=3)
    image, image_size = examples["encoder"]
    embedding = examples["decoder"][0]
    # Checks on another image size and on 1 and 5 points (the examples have 3): a graph that fixed a size fails them.
    point_checks = [
        decoder_inputs(embedding, 1, 1, seed=1, with_mask=False),
        decoder_inputs(embedding, 1, 5, seed=2, with_mask=True),
    ]
    graphs = {
        "encoder": (PixelEncoder(model), PixelEncoder(model), (image, image_size), [(image, image_size.flip(0))]),
        "decoder": (LowResDecoder(model), LowResDecoder(model), examples["decoder"], point_checks),
        "decoder_single": (
            LowResDecoder(model, single_mask=True),
            LowResDecoder(model, single_mask=True),
            examples["decoder"],
            point_checks,
        ),
    }
    contract = package_contract(model)
    paths = {}
    for role, (module, reference, example, checks) in graphs.items():
        program = _export_program(module.eval(), example, flexible_points=role != "encoder")
        check_against_eager(reference.eval(), program.module(), checks)
        inputs, outputs = contract[role]
        with warnings.catch_warnings():
            # coremltools calls its own deprecated op registry once per node; nothing a caller can act on.
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"coremltools\.")
            converted = ct.convert(
                program,
                inputs=_tensor_types(ct, inputs),
                outputs=[ct.TensorType(name, dtype=np.float32) for name, _ in outputs],
                convert_to="mlprogram",
                compute_precision=ct.precision.FLOAT16,
                minimum_deployment_target=getattr(ct.target, DEPLOYMENT_TARGET),
                skip_model_load=True,
            )
        converted.short_description = f"mobilesam {model_name} {role} ({model.img_size} px); see metadata.json beside it"
        converted.user_defined_metadata.update({"mobilesam.model": model_name, "mobilesam.role": role})
        paths[role] = save_package(converted, out / FILES[role], inputs, outputs)
    paths["metadata"] = write_phone_sidecar(
        out,
        model,
        export_format="coreml",
        model_name=model_name,
        weights=weights,
        graphs=mobile_graphs(FILES["encoder"], FILES["decoder"], FILES["decoder_single"], batch=1),
        coremltools=ct.__version__,
        coreml={
            "minimum_deployment_target": DEPLOYMENT_TARGET,
            "compute_precision": "float16",
            "converted_from": "torch.export",
            "max_points": MAX_POINTS,
        },
    )
    return paths


def package_contract(model: Sam) -> dict[str, tuple[list[Feature], list[Feature]]]:
    """Role -> (inputs, outputs) each package of `model` declares, as (name, shape); `POINTS` marks the point axis."""
    side = model.img_size
    grid = side // 16
    channels = model.prompt_encoder.embed_dim
    embedding = (1, channels, grid, grid)
    decoder_in = dict(
        zip(DECODER_INPUTS, [embedding, (1, POINTS, 2), (1, POINTS), (1, 1, 4 * grid, 4 * grid), (1,)], strict=True)
    )
    encoder_in = dict(zip(ENCODER_INPUTS, [(1, side, side, 3), (2,)], strict=True))
    contract = {"encoder": (list(encoder_in.items()), list(zip(ENCODER_OUTPUTS, [embedding], strict=True)))}
    for role, masks in (("decoder", 4), ("decoder_single", 1)):
        outputs = list(zip(DECODER_OUTPUTS, [(1, masks), (1, masks, 4 * grid, 4 * grid)], strict=True))
        contract[role] = (list(decoder_in.items()), outputs)
    return contract


def validate_coreml_package(path: str | os.PathLike[str], inputs: Sequence[Feature], outputs: Sequence[Feature]) -> None:
    """Check that `path` is an ML Program package declaring float32 `inputs` and `outputs` (`package_contract`), weights whole.

    Reads the package's specification and its weight headers only: Core ML
    itself, which would compile and run it, exists only on Apple's systems.

    Raises:
        ImportError: coremltools is not installed.
        RuntimeError: The package is unreadable, not an ML Program of this deployment
            target, its inputs or outputs differ from the contract, or a weight blob is missing.
    """
    ct = _coremltools()
    try:
        spec = ct.models.MLModel(os.fspath(path), skip_model_load=True).get_spec()
    except Exception as err:  # coremltools raises a bare Exception, OSError or protobuf errors alike
        raise RuntimeError(f"{path} is not a readable Core ML package ({type(err).__name__}: {err})") from None
    kind = spec.WhichOneof("Type")
    if kind != "mlProgram" or spec.specificationVersion < SPEC_VERSION:
        raise RuntimeError(
            f"{path} holds a {kind} of specification {spec.specificationVersion}; "
            f"expected an mlProgram of specification {SPEC_VERSION} or later ({DEPLOYMENT_TARGET})"
        )
    problems = _feature_problems(ct, "input", spec.description.input, inputs)
    problems += _feature_problems(ct, "output", spec.description.output, outputs)
    if problems:
        raise RuntimeError(f"{path} does not declare mobilesam's contract: {'; '.join(problems)}")
    damaged = _damaged_weights(Path(path), spec)
    if damaged:
        raise RuntimeError(f"{path} has missing or truncated weights: {'; '.join(damaged)}")


def _feature_problems(ct: ModuleType, kind: str, declared: Sequence[Any], expected: Sequence[Feature]) -> list[str]:
    """How the declared features differ from the expected ones (empty: they match)."""
    names = [feature.name for feature in declared]
    if names != [name for name, _ in expected]:
        return [f"{kind}s {names}, expected {[name for name, _ in expected]}"]
    float32 = ct.proto.FeatureTypes_pb2.ArrayFeatureType.FLOAT32
    problems = []
    for feature, (name, shape) in zip(declared, expected, strict=True):
        if feature.type.WhichOneof("Type") != "multiArrayType":
            problems.append(f"{kind} {name} is a {feature.type.WhichOneof('Type')}, expected a multi-array")
            continue
        array = feature.type.multiArrayType
        ranges = [(r.lowerBound, r.upperBound) for r in array.shapeRange.sizeRanges] or [(d, d) for d in array.shape]
        wanted = [(1, MAX_POINTS) if size == POINTS else (size, size) for size in shape]
        if array.dataType != float32 or ranges != wanted:
            dtype = ct.proto.FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.Name(array.dataType)
            problems.append(f"{kind} {name}: {dtype} sizes {ranges}, expected FLOAT32 sizes {wanted}")
    return problems


def _damaged_weights(package: Path, spec: Any) -> list[str]:
    """The weight blobs the program names that its files lack (reading only each blob's header).

    A blob (coremltools' MIL weight storage) starts with a 64-byte header:
    sentinel 0xDEADBEEF, data type, data size and data offset, little-endian.
    """
    damaged = []
    for function in spec.mlProgram.functions.values():
        for block in function.block_specializations.values():
            for operation in block.operations:
                for value in operation.attributes.values():
                    if value.WhichOneof("value") != "blobFileValue":
                        continue
                    blob = value.blobFileValue
                    file = package / WEIGHTS_ROOT / blob.fileName.removeprefix("@model_path/")
                    if not _blob_is_whole(file, blob.offset):
                        damaged.append(f"{file.name} at {blob.offset}")
    return damaged


def _blob_is_whole(file: Path, offset: int) -> bool:
    try:
        with file.open("rb") as stream:
            size = stream.seek(0, os.SEEK_END)
            stream.seek(offset)
            header = stream.read(24)
    except OSError:
        return False
    if len(header) < 24:
        return False
    sentinel, _, length, start = struct.unpack("<IIQQ", header)
    return sentinel == BLOB_SENTINEL and start + length <= size


def _export_program(module: nn.Module, example: tuple[torch.Tensor, ...], *, flexible_points: bool) -> Any:
    """`module` as an ATen-dialect `torch.export` program, the point axis dynamic for a decoder."""
    dynamic = None
    if flexible_points:
        points = torch.export.Dim(POINTS, min=1, max=MAX_POINTS)
        dynamic = {name: None for name in DECODER_INPUTS} | {"point_coords": {1: points}, "point_labels": {1: points}}
    with torch.no_grad():
        program = torch.export.export(module, example, dynamic_shapes=dynamic)
    # coremltools converts the ATen dialect, which the decompositions produce.
    return program.run_decompositions({})


def _tensor_types(ct: ModuleType, features: Sequence[Feature]) -> list[Any]:
    """float32 `ct.TensorType`s of `features`, the point axis one `ct.RangeDim` shared by coordinates and labels."""
    points = ct.RangeDim(1, MAX_POINTS, default=2)
    shapes = [tuple(points if size == POINTS else size for size in shape) for _, shape in features]
    return [ct.TensorType(name, shape=shape, dtype=np.float32) for (name, _), shape in zip(features, shapes, strict=True)]


def save_package(converted: Any, path: Path, inputs: Sequence[Feature], outputs: Sequence[Feature]) -> Path:
    """Save the converted `ct.models.MLModel` at `path`, validated (`validate_coreml_package`) before it replaces what was there.

    Raises:
        RuntimeError: The saved package fails validation; `path` is left as it was.
    """
    with _atomic_directory(path) as tmp:
        converted.save(os.fspath(tmp))
        validate_coreml_package(tmp, inputs, outputs)
    return path


@contextlib.contextmanager
def _atomic_directory(path: Path) -> Iterator[Path]:
    """Yield a temporary folder path beside `path`; on success it takes `path`'s place, on error it is removed.

    A folder cannot be renamed over another, so an old `path` moves aside
    first and comes back if the new one cannot take its place.
    """
    tmp = temporary_path(path)
    try:
        yield tmp
        if path.exists():
            old = temporary_path(path)
            os.replace(path, old)
            try:
                os.replace(tmp, path)
            except BaseException:
                os.replace(old, path)
                raise
            _remove(old)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            _remove(tmp)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def _coremltools() -> ModuleType:
    """coremltools, imported quietly.

    Raises:
        ImportError: It is not installed (the message names the extra).
    """
    logger = logging.getLogger("coremltools")
    level = logger.level
    # On Linux its import warns that Core ML's runtime is missing, which is expected: nothing runs a package here.
    logger.setLevel(logging.ERROR)
    try:
        import coremltools
    except ImportError as err:
        raise ImportError(f"the coreml format needs coremltools: pip install 'mobilesam[coreml]' ({err})") from None
    finally:
        logger.setLevel(level)
    return coremltools
