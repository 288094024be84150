"""Reading user images and writing results; the only package that touches user files."""

from .images import ImageSource, load_image, to_rgb_uint8

__all__ = ["ImageSource", "load_image", "to_rgb_uint8"]
