"""The served model's decoder graph, for the page that decodes clicks in the browser.

It is the `decoder.onnx` of the model's cached export (`export.cache`, the
folder the graph engines use, keyed by the weights' hash): exported once per
weights, on a thread of its own, then held in memory. The export runs on a
CPU copy of the model, so the served model, its device and the worker threads
running it are untouched.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from concurrent.futures import Future
from dataclasses import dataclass

import torch

from ..export.cache import cached_export
from ..modeling import Sam
from ..registry import build_from_config, config_of
from ..runtime.layout import DECODER_FILE
from .errors import ServiceError

logger = logging.getLogger(__name__)

# One export at a time in this process: the export cache names its scratch folder by the
# process id, so two services of the same weights exporting at once would share it.
_EXPORT_LOCK = threading.Lock()


class InPageDecodingOff(ServiceError):
    """The service was started with in-page decoding off, so it serves no decoder graph."""

    status_code = 404


class DecoderUnavailable(ServiceError):
    """The decoder graph could not be exported (onnx missing, or the export failed); the message says why."""

    status_code = 503


@dataclass(frozen=True)
class DecoderGraph:
    """The decoder graph's file and its entity tag (a quoted hash of the bytes)."""

    data: bytes
    etag: str


class DecoderGraphExport:
    """The decoder graph of one model, exported at most once, on a thread of its own.

    Args:
        model: The served model; only a CPU copy of it is exported.
    """

    def __init__(self, model: Sam) -> None:
        self._model = model
        self._lock = threading.Lock()
        self._future: Future[DecoderGraph] | None = None

    def start(self) -> Future[DecoderGraph]:
        """Start the export if nothing has yet; every caller gets the same future."""
        with self._lock:
            if self._future is None:
                self._future = Future()
                # Not a daemon: the interpreter must not exit under the exporter's native threads.
                threading.Thread(target=self._run, args=(self._future,), name="mobilesam-decoder-export").start()
            return self._future

    def join(self) -> None:
        """Wait for an export under way to end (it is not interruptible, and a finished one is cached for later runs)."""
        future = self._future
        if future is not None and not future.done():
            logger.warning("finishing the decoder graph's export (later runs reuse it)")
            future.exception()

    def failed(self) -> bool:
        """True once the export has failed (it is not tried again: a missing exporter stays missing)."""
        future = self._future
        return future is not None and future.done() and future.exception() is not None

    def _run(self, future: Future[DecoderGraph]) -> None:
        try:
            graph = export_decoder_graph(self._model)
        except BaseException as err:  # handed to every request that waits for the graph
            logger.warning("in-page decoding is unavailable: the decoder graph could not be exported: %s", err)
            future.set_exception(err)
        else:
            future.set_result(graph)


def export_decoder_graph(model: Sam) -> DecoderGraph:
    """The decoder graph of `model`'s cached export, exported now if no earlier run did.

    Raises:
        ImportError: onnx or onnxruntime is not installed.
        CheckpointError: `model` was built by hand and its weights are no registered model's.
    """
    with _EXPORT_LOCK:
        folder = cached_export(_cpu_copy(model))
    data = (folder / DECODER_FILE).read_bytes()
    return DecoderGraph(data, f'"{hashlib.sha256(data).hexdigest()[:32]}"')


def _cpu_copy(model: Sam) -> Sam:
    """A new CPU model with `model`'s configuration and weights, in eval mode.

    The exporter moves its model to the CPU in place and traces it; built anew,
    the copy also leaves behind whatever was patched onto the served instance.
    """
    with torch.device("cpu"):
        copy = build_from_config(config_of(model))
    copy.load_state_dict({name: tensor.detach().cpu() for name, tensor in model.state_dict().items()})
    # Both are baked into the graphs and named in the export's hash: the copy keeps the served model's.
    copy.mask_threshold, copy.image_format = model.mask_threshold, model.image_format
    return copy.eval()
