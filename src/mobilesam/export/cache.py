"""The graphs a backend runs, exported on first use into $MOBILESAM_HOME/exports and found again by the weights' hash."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import torch

from .. import __version__
from ..atomic import remove_dead_temporaries
from ..home import home_dir
from ..modeling import Sam
from ..registry import model_name
from ..runtime.layout import METADATA_FILE, QUANTIZED_ENCODER_FILES
from ..weights import state_digest
from .exporter import OPSET, export_onnx
from .quantize import write_quantized_encoder

logger = logging.getLogger(__name__)


def exports_dir() -> Path:
    """Where cached exports live, one folder per weights hash."""
    return home_dir() / "exports"


def weights_digest(model: Sam) -> str:
    """SHA-256 of the model's parameters and buffers (names, dtypes, shapes, bytes), and of what else shapes the graphs.

    It names the weights themselves, so a fine-tuned model in memory gets its own
    export, and a checkpoint file renamed or re-saved finds its old one. The
    input size and pixel format are not weights but are baked into the graphs.
    """
    shaping = (
        f"mobilesam {__version__} torch {torch.__version__} opset {OPSET} "
        f"image {model.img_size} {model.image_format} threshold {model.mask_threshold}"
    )
    return state_digest(model, shaping)


def cached_export(model: Sam, quantize: str | None = None) -> Path:
    """The export folder of `model`'s weights, written now if no earlier run did.

    Args:
        model: The model; its weights' hash names the folder.
        quantize: Also make sure the folder has this quantised encoder ("int8", "int8-static";
            the latter calibrated on scikit-image's photos).

    Raises:
        ImportError: The exporter or quantiser is not installed.
    """
    folder = exports_dir() / weights_digest(model)[:24]
    if not (folder / METADATA_FILE).is_file():
        _export_into(folder, model)
    if quantize is not None and not (folder / QUANTIZED_ENCODER_FILES[quantize]).is_file():
        # A warning, so the one line shows without logging set up: the first use takes seconds to a minute.
        logger.warning("quantising the encoder (%s) into %s, once; later runs reuse it", quantize, folder)
        write_quantized_encoder(folder, quantize)
    return folder


def _export_into(folder: Path, model: Sam) -> None:
    """Export into a scratch folder named with our pid, then rename it into place in one step."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_temporaries(folder.parent)
    scratch = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(scratch, ignore_errors=True)
    logger.warning("exporting the model's graphs to %s, once; later runs reuse them", folder)
    try:
        export_onnx(model, scratch, model_name=model_name(model))
        os.rename(scratch, folder)
    except OSError:
        # Another process renamed its finished export into place first: use that one.
        if not (folder / METADATA_FILE).is_file():
            raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
