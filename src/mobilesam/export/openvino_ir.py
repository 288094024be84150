"""The `openvino` export format: the ONNX graphs converted to OpenVINO IR (.xml + .bin), which OpenVINO loads without converting."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from ..atomic import atomic_path, write_text_atomic
from ..modeling import Sam
from ..runtime.layout import DECODER_FILE, ENCODER_FILE, METADATA_FILE, SAM_DECODER_INPUTS, SAM_DECODER_OUTPUTS, graph_entry
from ..weights import sha256_file
from .check import run_once
from .exporter import export_onnx
from .sidecar import base_metadata

GRAPH_FILES = {"encoder": "encoder.xml", "decoder": "decoder.xml"}


def export_openvino(
    model: Sam, out: str | Path, *, model_name: str, weights: str | Path | None = None, quantize: None = None
) -> dict[str, Path]:
    """Write `model`'s ONNX graphs as OpenVINO IR into folder `out`, with a sidecar, and run them once in OpenVINO.

    The graphs take and give what the ONNX ones do (`export.wrappers`); weights stay fp32
    (OpenVINO picks its compute precision when it compiles).

    Returns:
        Role ("encoder", "decoder", "metadata") -> path; each IR's .bin lies beside its .xml.

    Raises:
        ImportError: openvino (or onnx, onnxruntime) is not installed.
    """
    try:
        import openvino as ov
    except ImportError as err:
        raise ImportError(f"the openvino format needs openvino: pip install 'mobilesam[openvino]' ({err})") from None
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    with tempfile.TemporaryDirectory(dir=out, prefix=".onnx-") as scratch:
        export_onnx(model, scratch, model_name=model_name)
        for role, source in (("encoder", ENCODER_FILE), ("decoder", DECODER_FILE)):
            converted = ov.convert_model(Path(scratch) / source)
            target = out / GRAPH_FILES[role]
            # The .bin is written beside the .xml under the same stem: save both under a temporary
            # stem, then move the .bin first, so a reader never finds an .xml without its weights.
            staged = Path(scratch) / GRAPH_FILES[role]
            ov.save_model(converted, staged, compress_to_fp16=False)
            with atomic_path(target.with_suffix(".bin")) as tmp:
                shutil.copyfile(staged.with_suffix(".bin"), tmp)
            with atomic_path(target) as tmp:
                shutil.copyfile(staged, tmp)
            paths[role] = target
    metadata = {
        **base_metadata(model, model_name, weights),
        "format": "openvino",
        "graphs": {
            "encoder": graph_entry(GRAPH_FILES["encoder"], ("image",), ("image_embeddings",), layout="normalized"),
            "decoder": graph_entry(GRAPH_FILES["decoder"], SAM_DECODER_INPUTS, SAM_DECODER_OUTPUTS),
        },
        "openvino": ov.__version__,
    }
    for role, path in paths.items():
        metadata["graphs"][role]["sha256"] = sha256_file(path.with_suffix(".bin"))
    paths["metadata"] = write_text_atomic(out / METADATA_FILE, json.dumps(metadata, indent=2) + "\n")
    run_once(out)
    return paths
