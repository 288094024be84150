"""The coreml export: converted and validated here, never run (Core ML exists only on Apple's systems).

Fast tests check the package validation and the atomic save on a tiny
converted program; the slow one converts a seeded random vit_t built for
256x256 inputs and reads its packages' specifications back.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import sys
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from mobilesam import OnnxPredictor
from mobilesam.export.coreml import (
    MAX_POINTS,
    POINTS,
    package_contract,
    save_package,
    validate_coreml_package,
)
from mobilesam.export.formats import export_model
from mobilesam.registry import build_from_config, get_config
from reference import randomize

logging.getLogger("coremltools").setLevel(logging.ERROR)  # its import warns that Core ML's runtime is missing here
ct = pytest.importorskip("coremltools")

TINY_INPUTS = [("point_coords", (1, POINTS, 2)), ("point_labels", (1, POINTS))]
TINY_OUTPUTS = [("total", (1, 32))]


class _WeightedSum(nn.Module):
    """A tiny graph with the decoders' flexible point axis and a weight big enough for the weight file."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.arange(64.0).reshape(2, 32))

    def forward(self, point_coords: torch.Tensor, point_labels: torch.Tensor) -> torch.Tensor:
        return (point_coords * point_labels[..., None]).sum(dim=1) @ self.weight


@pytest.fixture(scope="module")
def tiny():
    """A converted `ct.models.MLModel` of `_WeightedSum`, the point axis 1..MAX_POINTS."""
    points = torch.export.Dim("points", min=1, max=MAX_POINTS)
    example = (torch.rand(1, 3, 2), torch.ones(1, 3))
    program = torch.export.export(
        _WeightedSum(), example, dynamic_shapes={"point_coords": {1: points}, "point_labels": {1: points}}
    ).run_decompositions({})
    axis = ct.RangeDim(1, MAX_POINTS, default=2)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"coremltools\.")
        return ct.convert(
            program,
            inputs=[ct.TensorType(name, shape=(1, axis, *rest), dtype=np.float32) for name, (_, _, *rest) in TINY_INPUTS],
            outputs=[ct.TensorType("total", dtype=np.float32)],
            convert_to="mlprogram",
            compute_precision=ct.precision.FLOAT16,
            minimum_deployment_target=ct.target.iOS16,
            skip_model_load=True,
        )


def test_validation_checks_names_shapes_and_ranges(tiny, tmp_path):
    path = save_package(tiny, tmp_path / "tiny.mlpackage", TINY_INPUTS, TINY_OUTPUTS)
    for inputs, outputs, problem in [
        ([("coords", (1, POINTS, 2)), TINY_INPUTS[1]], TINY_OUTPUTS, "inputs"),
        ([("point_coords", (1, 5, 2)), TINY_INPUTS[1]], TINY_OUTPUTS, r"input point_coords: FLOAT32 sizes \[\(1, 1\), \(1, 64\)"),
        (TINY_INPUTS, [("total", (1, 3))], r"output total: FLOAT32 sizes \[\(1, 1\), \(32, 32\)\], expected"),
    ]:
        with pytest.raises(RuntimeError, match=problem):
            validate_coreml_package(path, inputs, outputs)


@pytest.mark.parametrize("damage", ["program", "weights"])
def test_damaged_package_is_a_clear_error(tiny, tmp_path, damage):
    path = save_package(tiny, tmp_path / "tiny.mlpackage", TINY_INPUTS, TINY_OUTPUTS)
    data = path / "Data" / "com.apple.CoreML"
    file = data / "model.mlmodel" if damage == "program" else data / "weights" / "weight.bin"
    file.write_bytes(file.read_bytes()[:-40])
    problem = "is not a readable Core ML package" if damage == "program" else "missing or truncated weights"
    with pytest.raises(RuntimeError, match=problem):
        validate_coreml_package(path, TINY_INPUTS, TINY_OUTPUTS)


def test_save_replaces_a_package_only_with_a_valid_one(tiny, tmp_path):
    path = tmp_path / "tiny.mlpackage"
    path.mkdir()
    (path / "old").write_text("the previous package")
    save_package(tiny, path, TINY_INPUTS, TINY_OUTPUTS)
    assert not (path / "old").exists()
    validate_coreml_package(path, TINY_INPUTS, TINY_OUTPUTS)
    before = sorted(p.relative_to(path) for p in path.rglob("*"))
    with pytest.raises(RuntimeError, match="does not declare"):
        save_package(tiny, path, TINY_INPUTS, [("total", (1, 3))])
    assert sorted(p.relative_to(path) for p in path.rglob("*")) == before
    assert [p.name for p in tmp_path.iterdir()] == ["tiny.mlpackage"], "no temporary left behind"


@pytest.mark.skipif(sys.platform == "darwin", reason="Core ML runs on macOS")
def test_packages_cannot_run_here(tiny, tmp_path):
    path = save_package(tiny, tmp_path / "tiny.mlpackage", TINY_INPUTS, TINY_OUTPUTS)
    with pytest.raises(Exception, match="only supported on macOS"):
        ct.models.MLModel(str(path)).predict({"point_coords": np.zeros((1, 2, 2), np.float32), "point_labels": np.ones((1, 2))})


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(model, folder): random weights of a 256x256 vit_t, exported as coreml."""
    model = randomize(build_from_config(dataclasses.replace(get_config("vit_t"), image_size=256)), seed=3)
    folder = tmp_path_factory.mktemp("coreml") / "packages"
    paths = export_model(model, folder, format="coreml", model_name="vit_t")
    assert set(paths) == {"encoder", "decoder", "decoder_single", "metadata"}
    return model, folder


def _operations(path) -> list:
    spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    function = spec.mlProgram.functions["main"]
    assert function.opset == "CoreML6", "iOS 16's opset"
    return list(function.block_specializations[function.opset].operations)


@pytest.mark.slow
def test_export_writes_fp16_programs_that_declare_the_contract(exported):
    model, folder = exported
    assert sorted(p.name for p in folder.iterdir()) == [
        "decoder.mlpackage",
        "decoder_single.mlpackage",
        "encoder.mlpackage",
        "metadata.json",
    ]
    metadata = json.loads((folder / "metadata.json").read_text())
    assert metadata["format"] == "coreml" and metadata["coremltools"] == ct.__version__ and metadata["image_size"] == 256
    assert metadata["coreml"]["minimum_deployment_target"] == "iOS16"
    assert metadata["graphs"]["decoder"]["batch"] == 1 and metadata["graphs"]["encoder"]["layout"] == "pixels"
    float32 = ct.proto.MIL_pb2.DataType.Value("FLOAT32")
    for role, (inputs, outputs) in package_contract(model).items():
        path = folder / metadata["graphs"][role]["file"]
        validate_coreml_package(path, inputs, outputs)
        operations = _operations(path)
        kinds = collections.Counter(op.type for op in operations)
        # fp16 compute: float32 only where the inputs are cast down and the outputs cast back up.
        fp32_results = [out.name for op in operations for out in op.outputs if out.type.tensorType.dataType == float32]
        assert sorted(fp32_results) == sorted(name for name, _ in outputs), role
        weights = [op for op in operations if op.type == "const" and "val" in op.attributes]
        assert any(op.attributes["val"].WhichOneof("value") == "blobFileValue" for op in weights), "weights in weight.bin"
        if role == "encoder":
            assert kinds["conv"] > 10 and kinds["softmax"] > 0
        else:
            assert kinds["sin"] == kinds["cos"] == 1 and kinds["softmax"] > 0
    single = {op.type for op in _operations(folder / "decoder_single.mlpackage")}
    assert {"reduce_max", "floor"} <= single, "the single-mask choice"


@pytest.mark.slow
def test_coreml_folder_is_refused_by_the_predictor(exported):
    folder = exported[1]
    with pytest.raises(RuntimeError, match="coreml does not run on this platform"):
        OnnxPredictor(folder, runtime="coreml")
    with pytest.raises(ValueError, match="no runtime here runs 'coreml' exports"):
        OnnxPredictor(folder)
