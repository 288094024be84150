"""`segment_anything.utils.transforms`'s name for `mobilesam.transforms.ResizeLongestSide`."""

from ..transforms import ResizeLongestSide

__all__ = ["ResizeLongestSide"]
