"""The exported graphs as TorchScript modules (`torch.jit.load`), the one runtime module that imports torch."""

from __future__ import annotations

import os
import warnings

import numpy as np
import torch

from .layout import ExportedGraphs
from .sessions import GraphSessions


class TorchScriptSessions(GraphSessions):
    """The encoder and decoder modules of a torchscript export, run under `torch.inference_mode()`.

    Args:
        graphs: From `find_graphs`.
        threads: Ignored: torch's intra-op threads are one setting for the whole
            process, so a predictor must not change them; call `torch.set_num_threads`
            in the application instead.

    Raises:
        ValueError: A module file is truncated or is not TorchScript.
    """

    def __init__(self, graphs: ExportedGraphs, *, threads: int | None = None) -> None:
        super().__init__(graphs)
        self.encoder = load_module(graphs.encoder)
        self.decoder = load_module(graphs.decoder)

    def _run_encoder(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        (image_embeddings,) = _run(self.encoder, feeds, ("image_embeddings",), ("image_embeddings",))
        return image_embeddings

    def _run_decoder(self, feeds: dict[str, np.ndarray], outputs: tuple[str, ...]) -> list[np.ndarray]:
        return _run(self.decoder, feeds, self.graphs.decoder_outputs, outputs)


def load_module(path: str | os.PathLike[str]) -> torch.jit.ScriptModule:
    """The TorchScript module saved at `path`, on CPU, in eval mode.

    Raises:
        ValueError: `path` is truncated or is not a TorchScript file.
    """
    try:
        with warnings.catch_warnings():
            # Reading TorchScript is this runtime's whole point; torch's notice that it is deprecated says nothing new.
            warnings.filterwarnings("ignore", r"`torch\.jit\.load` is deprecated", FutureWarning)
            module = torch.jit.load(os.fspath(path), map_location="cpu")
    except (RuntimeError, ValueError) as err:
        # torch reports a truncated zip or a foreign file as a RuntimeError from its archive reader.
        reason = (str(err).strip() or type(err).__name__).splitlines()[0]
        raise ValueError(
            f"{path} is not a readable TorchScript module ({reason}); export again with `mobilesam export --format torchscript`"
        ) from None
    return module.eval()


def _run(
    module: torch.jit.ScriptModule, feeds: dict[str, np.ndarray], names: tuple[str, ...], outputs: tuple[str, ...]
) -> list[np.ndarray]:
    """`module`'s `outputs` for `feeds` (positional, in graph order), whose results are named `names` in order."""
    # torch warns on arrays it cannot write to (numpy broadcast views); those are copied.
    tensors = [torch.from_numpy(value if value.flags.writeable else value.copy()) for value in feeds.values()]
    with torch.inference_mode():
        results = module(*tensors)
    found = dict(zip(names, results if isinstance(results, tuple) else (results,), strict=True))
    return [found[name].numpy() for name in outputs]
