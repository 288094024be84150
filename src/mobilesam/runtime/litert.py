"""The exported graphs on the LiteRT (TensorFlow Lite) interpreter, its XNNPACK CPU delegate on."""

from __future__ import annotations

import os
import re
import threading
from typing import Any

import numpy as np

from .layout import ExportedGraphs
from .sessions import GraphSessions

# The `tflite` writer's decoder signature for N prompt points (`export.tflite.DECODER_SIGNATURE`).
_POINTS_SIGNATURE = re.compile(r"points_([0-9]+)")


class LiteRtSessions(GraphSessions):
    """The encoder and decoder flatbuffers of one `tflite` export, each in a LiteRT interpreter.

    The decoders hold one signature per point count N ("points_<N>"): a prompt of N
    points runs that signature. Interpreters are not thread-safe, so each runs under a lock.

    Args:
        graphs: From `find_graphs`.
        threads: Interpreter threads; None lets LiteRT choose.

    Raises:
        ImportError: ai-edge-litert is not installed.
        ValueError: A file is not a LiteRT flatbuffer, or its signatures are not the export's inputs.
    """

    def __init__(self, graphs: ExportedGraphs, *, threads: int | None = None) -> None:
        super().__init__(graphs)
        encoder = _interpreter(graphs.encoder, threads)
        self._encoder_lock = threading.Lock()
        (self._encoder,) = _runners(encoder, graphs.encoder, graphs.encoder_inputs).values()
        decoder = _interpreter(graphs.decoder, threads)
        self._decoder_lock = threading.Lock()
        self._decoders: dict[int, Any] = {}
        for name, runner in _runners(decoder, graphs.decoder, graphs.decoder_inputs).items():
            match = _POINTS_SIGNATURE.fullmatch(name)
            if match is None:
                raise ValueError(f"{graphs.decoder} has signature {name!r}, not points_<N>; export again with `mobilesam export`")
            self._decoders[int(match.group(1))] = runner

    @property
    def point_counts(self) -> tuple[int, ...]:
        """The numbers of prompt points (clicks, box corners, padding point) the decoder takes."""
        return tuple(sorted(self._decoders))

    def _run_encoder(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        with self._encoder_lock:
            (image_embeddings,) = self._encoder(**feeds).values()
        return image_embeddings

    def _run_decoder(self, feeds: dict[str, np.ndarray], outputs: tuple[str, ...]) -> list[np.ndarray]:
        count = feeds["point_labels"].shape[1]
        if count not in self._decoders:
            raise ValueError(
                f"{self.graphs.decoder} takes prompts of {', '.join(map(str, self.point_counts))} points (clicks, box "
                f"corners and the padding point), not {count}; export with `points` that include {count}"
            )
        with self._decoder_lock:
            found = self._decoders[count](**feeds)
        return [found[name] for name in outputs]


def _interpreter(path: os.PathLike[str], threads: int | None) -> Any:
    """A LiteRT interpreter of flatbuffer `path` (XNNPACK-delegated, LiteRT's default).

    Raises:
        ImportError: ai-edge-litert is not installed.
        ValueError: `path` is not a LiteRT flatbuffer.
    """
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as err:
        raise ImportError(f"the litert runtime needs ai-edge-litert: pip install 'mobilesam[tflite]' ({err})") from None
    try:
        return Interpreter(model_path=os.fspath(path), num_threads=threads)
    except (ValueError, RuntimeError) as err:
        raise ValueError(f"{path} is not a readable LiteRT flatbuffer ({err}); export again with `mobilesam export`") from None


def _runners(interpreter: Any, path: os.PathLike[str], inputs: tuple[str, ...]) -> dict[str, Any]:
    """Signature name -> runner, each checked to take `inputs` by name (a runner is fed by name, not by order)."""
    runners = {}
    for name, signature in interpreter.get_signature_list().items():
        if sorted(signature["inputs"]) != sorted(inputs):
            raise ValueError(
                f"{path}'s signature {name!r} takes {', '.join(signature['inputs'])}, not the sidecar's "
                f"{', '.join(inputs)}; export again with `mobilesam export`"
            )
        runners[name] = interpreter.get_signature_runner(name)
    if not runners:
        raise ValueError(f"{path} has no signatures; export again with `mobilesam export`")
    return runners
