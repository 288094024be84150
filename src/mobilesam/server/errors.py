"""The errors the service answers with; each carries its HTTP status, so nothing else needs to know HTTP."""

from __future__ import annotations

from ..errors import MobileSamError


class ServiceError(MobileSamError):
    """A request the service refuses; `status_code` is the HTTP status the routes answer with."""

    status_code = 500

    @property
    def headers(self) -> dict[str, str]:
        """HTTP headers to send with the error."""
        return {}


class ImageNotFound(ServiceError):
    """The image id is not in the cache: never uploaded, or evicted."""

    status_code = 404


class PayloadTooLarge(ServiceError):
    """The request, the image file or its pixel count is over the limit."""

    status_code = 413


class UnsupportedMedia(ServiceError):
    """Not an image, or not one of the formats the service decodes."""

    status_code = 415


class InvalidRequest(ServiceError):
    """A prompt, option or upload body that cannot be used; the message says why."""

    status_code = 422


class ServiceBusy(ServiceError):
    """The work queue is full; the client should retry after `retry_after_s` seconds.

    Args:
        message: What is busy.
        retry_after_s: Seconds to wait before retrying.
    """

    status_code = 503

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    @property
    def headers(self) -> dict[str, str]:
        """Retry-After, in seconds."""
        return {"Retry-After": str(self.retry_after_s)}
