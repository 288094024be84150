"""The images of a Ray run: references (paths or URIs) that the workers read, never pixels."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..io.remote import find_uri_images, is_uri
from ..io.sources import ImageJob, find_jobs
from ..prompts import Prompt


@dataclass(frozen=True)
class ImageRef:
    """One image of a Ray run.

    Attributes:
        image: Its path as the source gave it, or its URI ("s3://bucket/photos/dog.jpg").
        stem: Output name, as `mobilesam.io.sources.ImageJob.stem`.
        objects: One checked prompt per object, from a prompts file; or None to use the task's own.
    """

    image: str
    stem: str
    objects: tuple[Prompt, ...] | None = None

    @classmethod
    def from_job(cls, job: ImageJob) -> ImageRef:
        """The reference of a local run's job."""
        return cls(str(job.path), job.stem, job.objects)

    def readable(self) -> str:
        """Where a worker reads the image: its URI, or its absolute path (workers have their own working folder)."""
        return self.image if is_uri(self.image) else os.path.abspath(self.image)


def find_images(source: str | os.PathLike[str], exclude: str | os.PathLike[str] | None = None) -> list[ImageRef]:
    """SOURCE of a Ray run as image references, with the stems a local run gives them.

    Args:
        source: What `mobilesam.io.sources.find_jobs` takes (image file, folder,
            glob, prompts file), or the URI of an image or of a folder of images
            (`mobilesam.io.remote.find_uri_images`).
        exclude: A local folder whose files are never taken (the output folder).

    Raises:
        SourceError: Nothing matches, or the prompts file is malformed.
        FileNotFoundError: A file or folder that does not exist.
        ImportError: A URI whose filesystem is not installed.
    """
    text = os.fspath(source)
    if is_uri(text):
        return [ImageRef(uri, stem) for uri, stem in find_uri_images(text)]
    return [ImageRef.from_job(job) for job in find_jobs(text, exclude=exclude)]
