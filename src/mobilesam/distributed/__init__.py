"""Ray Data labeling: `mobilesam predict/everything --ray`, the same jobs and writers, one model per actor.

`label` is the entry point. The driver lists the images (paths or URIs, never
pixels) and skips those done; Ray Data feeds them in small blocks to a pool of
actors, each of which loads the model once (`worker.Labeler`), reads its
images, segments them with the task the local run uses (`mobilesam.tasks`)
and writes their outputs with the local run's writers. Ray is imported only
when a run starts: pip install 'mobilesam[ray]'. `embed_on_ray` fills an
embedding store the same way (`mobilesam embed --ray`).
"""

from __future__ import annotations

from .embed import EmbedSummary, embed_on_ray
from .refs import ImageRef, find_images
from .run import RaySummary, label
from .worker import Labeler, ModelSpec

__all__ = ["EmbedSummary", "ImageRef", "Labeler", "ModelSpec", "RaySummary", "embed_on_ray", "find_images", "label"]
