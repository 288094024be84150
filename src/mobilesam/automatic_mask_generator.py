"""`segment_anything.automatic_mask_generator`'s name for `mobilesam.automatic.SamAutomaticMaskGenerator`."""

from .automatic import SamAutomaticMaskGenerator

__all__ = ["SamAutomaticMaskGenerator"]
