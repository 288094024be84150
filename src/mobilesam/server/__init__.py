"""`mobilesam serve`: an HTTP service for prompted segmentation and a click-to-segment page.

Needs the `serve` extra: `pip install 'mobilesam[serve]'`.
"""

from .app import CachedImage, ServeSettings, create_app, decode_image, image_key
from .cache import CacheStats, SingleFlightLRU
from .worker import ModelWorker, WorkerBusy

__all__ = [
    "CacheStats",
    "CachedImage",
    "ModelWorker",
    "ServeSettings",
    "SingleFlightLRU",
    "WorkerBusy",
    "create_app",
    "decode_image",
    "image_key",
]
