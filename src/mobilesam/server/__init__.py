"""`mobilesam serve`: an HTTP service for prompted segmentation and a click-to-segment page.

Needs the `serve` extra: `pip install 'mobilesam[serve]'`.
"""

from .app import create_app
from .cache import CacheStats, SingleFlightLRU
from .codec import decode_image
from .errors import ImageNotFound, InvalidRequest, PayloadTooLarge, ServiceBusy, ServiceError, UnsupportedMedia
from .service import CachedImage, SegmentationService, ServeSettings, image_key
from .worker import ModelWorker, WorkerBusy

__all__ = [
    "CacheStats",
    "CachedImage",
    "ImageNotFound",
    "InvalidRequest",
    "ModelWorker",
    "PayloadTooLarge",
    "SegmentationService",
    "ServeSettings",
    "ServiceBusy",
    "ServiceError",
    "SingleFlightLRU",
    "UnsupportedMedia",
    "WorkerBusy",
    "create_app",
    "decode_image",
    "image_key",
]
