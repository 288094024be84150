"""`mobilesam serve`: an HTTP service for prompted segmentation and a click-to-segment page.

Needs the `serve` extra: `pip install 'mobilesam[serve]'`.
"""

from .app import create_app
from .cache import CacheStats, SingleFlightLRU
from .service import (
    CachedImage,
    ImageNotFound,
    InvalidRequest,
    PayloadTooLarge,
    SegmentationService,
    ServeSettings,
    ServiceBusy,
    ServiceError,
    UnsupportedMedia,
    decode_image,
    image_key,
)
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
