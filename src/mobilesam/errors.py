"""Errors a user can act on; each message names the problem and the fix."""

from __future__ import annotations


class MobileSamError(Exception):
    """Base class of the errors this package raises on purpose."""


class UnknownModelError(MobileSamError, ValueError):
    """A model or checkpoint name that is neither registered nor an existing file."""


class CheckpointError(MobileSamError, ValueError):
    """A checkpoint file that cannot be used: unreadable, truncated, wrong model, bad checksum."""


class DownloadError(MobileSamError, OSError):
    """A checkpoint could not be downloaded; the message says where to put it by hand."""


class SourceError(MobileSamError, ValueError):
    """A source that names no images, or a prompts file that cannot be understood."""


class DatasetError(MobileSamError, ValueError):
    """A dataset file or folder that cannot be understood; the message names the file."""


class ConfigError(MobileSamError, ValueError):
    """A training configuration that cannot be used; the message names the setting."""


class ImageTooLarge(MobileSamError, ValueError):
    """An image file whose header gives more pixels than the limit; none of its pixels were decoded.

    Args:
        name: The file, URL or upload, as the user named it.
        size: (width, height) from the header.
        max_pixels: The limit it is over.
    """

    def __init__(self, name: str, size: tuple[int, int], max_pixels: int) -> None:
        self.name = name
        self.width, self.height = size
        self.max_pixels = max_pixels
        super().__init__(
            f"image {name} is {self.width}x{self.height} = {self.pixels:,} pixels, over the limit of {max_pixels:,} "
            "(a guard against decompression bombs); if you trust the file, raise the limit: "
            "--max-pixels on the command line, max_pixels in Python"
        )

    @property
    def pixels(self) -> int:
        """Width x height."""
        return self.width * self.height
