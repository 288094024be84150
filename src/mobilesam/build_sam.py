"""`segment_anything.build_sam` (and MobileSAM's) under its names, over `mobilesam.registry`.

SAM's and MobileSAM's scripts run unchanged with the import renamed:
`from mobilesam.build_sam import sam_model_registry, build_sam_vit_t`. As in
segment_anything, the package attribute `mobilesam.build_sam` is the function
`mobilesam.registry.build_sam`, not this module: reach the module with a
`from` import or `importlib.import_module("mobilesam.build_sam")`.
"""

from __future__ import annotations

import os

from .modeling import Sam
from .registry import build_sam, sam_model_registry

__all__ = ["build_sam", "build_sam_vit_b", "build_sam_vit_h", "build_sam_vit_l", "build_sam_vit_t", "sam_model_registry"]


def build_sam_vit_h(checkpoint: str | os.PathLike[str] | None = None) -> Sam:
    """SAM ViT-H in eval mode on the CPU, with `checkpoint`'s weights (random when None); see `build_sam`."""
    return build_sam("vit_h", checkpoint)


def build_sam_vit_l(checkpoint: str | os.PathLike[str] | None = None) -> Sam:
    """SAM ViT-L in eval mode on the CPU, with `checkpoint`'s weights (random when None); see `build_sam`."""
    return build_sam("vit_l", checkpoint)


def build_sam_vit_b(checkpoint: str | os.PathLike[str] | None = None) -> Sam:
    """SAM ViT-B in eval mode on the CPU, with `checkpoint`'s weights (random when None); see `build_sam`."""
    return build_sam("vit_b", checkpoint)


def build_sam_vit_t(checkpoint: str | os.PathLike[str] | None = None) -> Sam:
    """MobileSAM in eval mode on the CPU, with `checkpoint`'s weights (random when None); see `build_sam`."""
    return build_sam("vit_t", checkpoint)
