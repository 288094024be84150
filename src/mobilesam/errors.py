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
