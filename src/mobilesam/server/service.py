"""The service behind the HTTP routes: upload an image once, then segment it many times.

Model work runs on a `ModelWorker` (bounded queue, `ServiceBusy` when full);
image embeddings live in a byte-bounded `SingleFlightLRU` keyed by a hash of
the decoded pixels, so the same image is embedded once however often, and
however concurrently, it is uploaded. For in-page decoding the service also
hands out an image's embedding and the model's decoder graph, so the page
decodes clicks itself. Nothing here knows HTTP: each `ServiceError` carries
the status code the routes answer with.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import numpy as np
import torch

from ..automatic import SamAutomaticMaskGenerator
from ..backends import Backend, make_backend
from ..embedding import ImageEmbedding
from ..embedding_store import EmbeddingStore
from ..export.cache import weights_digest
from ..io.images import DEFAULT_MAX_PIXELS, pixels_digest
from ..modeling import Sam, count_parameters
from ..predictor import SamPredictor
from ..prompts import Prompt
from ..results import Results
from ..segment import segment_prompts
from .cache import SingleFlightLRU
from .codec import decode_image, everything_masks, request_prompt, segment_masks
from .decoder_graph import DecoderGraph, DecoderGraphExport, DecoderUnavailable, InPageDecodingOff
from .errors import ImageNotFound, InvalidRequest, PayloadTooLarge, ServiceBusy, UnsupportedMedia
from .schemas import (
    EverythingRequest,
    EverythingResponse,
    Health,
    ImageInfo,
    ModelInfo,
    ModelList,
    SegmentRequest,
    SegmentResponse,
)
from .worker import ModelWorker, WorkerBusy

logger = logging.getLogger(__name__)

T = TypeVar("T")

EmbeddingDtype = Literal["float16", "float32"]

_MIB = 2**20


@dataclass(frozen=True)
class ServeSettings:
    """What the service allows and how much it keeps.

    Args:
        model_name: Name shown by /v1/models and /healthz ("vit_t", ...).
        checkpoint: Where the weights came from, for /v1/models.
        cache_bytes: Bound on the cached embeddings plus the decoded pixels kept with them.
        max_upload_bytes: Largest image file accepted.
        max_pixels: Largest width x height accepted (decompression bombs stop here).
        queue_size: Model jobs that may wait; more get 503 with Retry-After.
        worker_threads: Threads running the model.
        retry_after_s: Seconds a client is told to wait when the queue is full.
        api_key: If set, /v1 requests need it in the X-API-Key header.
        cors_origins: Origins allowed to call the API from a browser; none by default.
        in_page_decoding: Serve the decoder graph (GET /v1/decoder.onnx), so the page decodes clicks
            in the browser on the image's embedding (GET /v1/images/{id}/embedding) without a
            request per click. The graph is exported once per weights (later runs reuse it), in the
            background from when the page loads. Off: the page sends every click to /segment.
        embeddings: An embedding store's folder (`mobilesam embed`): an upload of a stored image
            is answered without running the encoder, and new uploads are stored there too.
    """

    model_name: str = "vit_t"
    checkpoint: str = "random weights"
    cache_bytes: int = 512 * _MIB
    max_upload_bytes: int = 20 * _MIB
    max_pixels: int = DEFAULT_MAX_PIXELS
    queue_size: int = 16
    worker_threads: int = 1
    retry_after_s: int = 1
    api_key: str | None = None
    cors_origins: tuple[str, ...] = ()
    in_page_decoding: bool = True
    embeddings: str | None = None

    def __post_init__(self) -> None:
        for name in ("max_upload_bytes", "max_pixels", "queue_size", "worker_threads", "retry_after_s"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.cache_bytes < 0:
            raise ValueError(f"cache_bytes must be >= 0, got {self.cache_bytes}")
        if self.api_key is not None and not self.api_key:
            raise ValueError("api_key must not be empty; leave it out to serve without one")


@dataclass(frozen=True)
class CachedImage:
    """What the service keeps per image: its embedding, and its pixels for segment-everything's crops."""

    embedding: ImageEmbedding[torch.Tensor]  # features on the model's device
    pixels: np.ndarray  # (H, W, 3) uint8 RGB, as decoded from the upload

    @property
    def original_size(self) -> tuple[int, int]:
        return self.embedding.original_size

    @property
    def nbytes(self) -> int:
        return self.embedding.nbytes + self.pixels.nbytes


@dataclass(frozen=True)
class EmbeddingPayload:
    """An image's embedding as the embedding route sends it: raw little-endian C-order values.

    Attributes:
        features: (1, C, h, w) on the model's device.
        dtype: What the values are sent as.
        original_size: (H, W) of the image.
        input_size: (h, w) of the image resized for the model, before padding.
        etag: Quoted entity tag; it changes with the weights, the backend, the image and the dtype.
    """

    features: torch.Tensor
    dtype: EmbeddingDtype
    original_size: tuple[int, int]
    input_size: tuple[int, int]
    etag: str

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.features.shape)

    def to_bytes(self) -> bytes:
        """The values, converted (from the model's device and dtype) to little-endian `dtype`, in C order."""
        values = self.features.detach().to("cpu", torch.float32).numpy()
        return np.ascontiguousarray(values, dtype="<f2" if self.dtype == "float16" else "<f4").tobytes()


def image_key(rgb: np.ndarray) -> str:
    """The image id: a hash of the (H, W, 3) uint8 pixels, whatever file format they came in."""
    return pixels_digest(rgb)[:32]


class SegmentationService:
    """One model behind an embedding cache and a bounded work queue.

    The methods that wait for the model are coroutines: waiting holds no
    thread, and a caller that goes away does not cancel work that another
    caller may share.

    Args:
        model: The model, in eval mode on its device; only the worker threads run it.
        settings: Limits and sizes; the defaults suit a laptop.
        backend: What embeds uploads and decodes prompts and segment-everything
            (a backend of `model` or its name; default "auto", the fastest faithful engine here).
    """

    def __init__(self, model: Sam, settings: ServeSettings | None = None, backend: Backend | str = "auto") -> None:
        self.model = model
        self.settings = settings or ServeSettings()
        # Before the backend, which may export the model: a wrong store fails at once.
        self.embeddings = None if self.settings.embeddings is None else EmbeddingStore(self.settings.embeddings, model)
        # One backend for every request: clicks on one image reuse the image side
        # of the transformer that it keeps for the last embedding.
        self.backend = make_backend(backend, model) if isinstance(backend, str) else backend
        self.worker = ModelWorker(self.settings.queue_size, self.settings.worker_threads)
        # Segment everything takes seconds: on a lane of its own, it never holds up the clicks
        # and uploads queued behind it (they share the cores meanwhile, and stay interactive).
        self.everything_worker = ModelWorker(self.settings.queue_size, 1)
        self.cache: SingleFlightLRU[CachedImage] = SingleFlightLRU(self.settings.cache_bytes, lambda image: image.nbytes)
        self.decoder_graph = DecoderGraphExport(model)
        self._version_lock = threading.Lock()
        self._version: str | None = None

    def prepare_decoder(self) -> None:
        """Start exporting the decoder graph in the background (when in-page decoding is on), so it is ready when asked for.

        The page calls for it as it loads: clients of the API alone never pay for the export.
        """
        if self.settings.in_page_decoding:
            self.decoder_graph.start()

    def close(self) -> None:
        """Finish the queued model work and the decoder graph's export, and stop the worker threads."""
        self.worker.close()
        self.everything_worker.close()
        self.decoder_graph.join()

    def health(self) -> Health:
        """Liveness, with the state of the embedding cache and the work queue."""
        stats = self.cache.stats()
        return Health(
            status="ok",
            model=self.settings.model_name,
            backend=self.backend.name,
            precision=self.backend.spec.precision,
            cache_entries=stats.entries,
            cache_bytes=stats.bytes,
            cache_max_bytes=stats.max_bytes,
            cache_hits=stats.hits,
            embeddings_computed=stats.computations,
            queue_waiting=self.worker.waiting(),
            queue_size=self.worker.queue_size,
            everything_waiting=self.everything_worker.waiting(),
            in_page_decoding=self.settings.in_page_decoding and not self.decoder_graph.failed(),
        )

    def models(self) -> ModelList:
        """The model this service runs."""
        return ModelList(
            models=[
                ModelInfo(
                    name=self.settings.model_name,
                    checkpoint=self.settings.checkpoint,
                    parameters=count_parameters(self.model),
                    device=str(self.model.device),
                    image_size=self.model.image_encoder.img_size,
                )
            ]
        )

    def image(self, image_id: str) -> CachedImage:
        """The cached embedding and pixels of an uploaded image.

        Raises:
            ImageNotFound: It was never uploaded, or has been evicted.
        """
        image = self.cache.get(image_id)
        if image is None:
            raise ImageNotFound(f"image {image_id!r} is not in the cache (never uploaded, or evicted): POST it to /v1/images")
        return image

    async def upload(self, data: bytes, content_type: str) -> ImageInfo:
        """Decode an image file and cache its embedding (once: the same pixels again are a cache hit).

        Args:
            data: The image file.
            content_type: Its MIME type: image/*, or empty or application/octet-stream to let the bytes decide.

        Raises:
            UnsupportedMedia: Not an image type, or not a readable image.
            PayloadTooLarge: More than `max_upload_bytes` bytes or `max_pixels` pixels.
            ServiceBusy: The work queue is full.
        """
        started = time.perf_counter()
        declared = content_type.lower()
        # A file sent without a type (or as generic bytes) is what its bytes are: decoding decides.
        if declared not in ("", "application/octet-stream") and not declared.startswith("image/"):
            raise UnsupportedMedia(f"only images are accepted, got content type {content_type!r}")
        if len(data) > self.settings.max_upload_bytes:
            raise PayloadTooLarge(f"the image file has {len(data):,} bytes; the limit is {self.settings.max_upload_bytes:,}")
        rgb = await asyncio.to_thread(decode_image, data, self.settings.max_pixels)
        image_id = image_key(rgb)
        try:
            future, lookup = self.cache.get_or_submit(image_id, lambda: self.worker.submit(self._embed, rgb))
        except WorkerBusy as err:
            raise ServiceBusy(str(err), self.settings.retry_after_s) from err
        if lookup == "computed":
            logger.info("embedding image %s (%dx%d)", image_id, rgb.shape[1], rgb.shape[0])
        await self._result(future)
        return ImageInfo(
            image_id=image_id,
            width=rgb.shape[1],
            height=rgb.shape[0],
            cached=lookup != "computed",
            milliseconds=_ms_since(started),
        )

    async def segment(self, image_id: str, request: SegmentRequest) -> SegmentResponse:
        """Masks for one object from points, a box and/or a previous mask, on the cached embedding, best first.

        Raises:
            ImageNotFound: The image is not in the cache.
            InvalidRequest: The prompt does not fit the image or the model.
            ServiceBusy: The work queue is full.
        """
        started = time.perf_counter()
        image = self.image(image_id)
        try:
            prompt = request_prompt(request, image.original_size, self.model.prompt_encoder.mask_input_size)
        except ValueError as err:
            raise InvalidRequest(str(err)) from err
        results = await self._result(self._submit(self._segment, image, prompt, request))
        masks = segment_masks(results, request)
        h, w = image.original_size
        return SegmentResponse(image_id=image_id, width=w, height=h, masks=masks, milliseconds=_ms_since(started))

    async def everything(self, image_id: str, request: EverythingRequest | None = None) -> EverythingResponse:
        """Segment everything: a grid of point prompts, filtered and de-duplicated (COCO RLE masks).

        Raises:
            ImageNotFound: The image is not in the cache.
            InvalidRequest: The generator refuses the options.
            ServiceBusy: The work queue is full.
        """
        started = time.perf_counter()
        image = self.image(image_id)
        options = (request or EverythingRequest()).model_dump()
        try:
            generator = SamAutomaticMaskGenerator(self.model, output_mode="coco_rle", backend=self.backend, **options)
        except ValueError as err:
            raise InvalidRequest(str(err)) from err
        records = await self._result(
            self._submit(
                functools.partial(generator.generate, embedding=image.embedding), image.pixels, worker=self.everything_worker
            )
        )
        h, w = image.original_size
        return EverythingResponse(
            image_id=image_id, width=w, height=h, masks=everything_masks(records), milliseconds=_ms_since(started)
        )

    async def embedding(self, image_id: str, dtype: EmbeddingDtype = "float16") -> EmbeddingPayload:
        """A cached image's embedding, to send as raw values (convert it with `EmbeddingPayload.to_bytes`).

        Raises:
            ImageNotFound: The image is not in the cache.
        """
        image = self.image(image_id)
        version = await asyncio.to_thread(self._model_version)
        embedding = image.embedding
        return EmbeddingPayload(
            embedding.features, dtype, embedding.original_size, embedding.input_size, f'"{version}-{image_id}-{dtype}"'
        )

    async def decoder(self) -> DecoderGraph:
        """The model's decoder graph (ONNX), waiting for its export if it is still running.

        Raises:
            InPageDecodingOff: The service was started with in-page decoding off.
            DecoderUnavailable: The graph could not be exported.
        """
        if not self.settings.in_page_decoding:
            raise InPageDecodingOff(
                "in-page decoding is off (mobilesam serve --no-in-page-decoding): "
                "send prompts to POST /v1/images/{image_id}/segment instead"
            )
        try:
            return await asyncio.shield(asyncio.wrap_future(self.decoder_graph.start()))
        except Exception as err:
            raise DecoderUnavailable(f"the decoder graph could not be exported: {err}") from err

    def _model_version(self) -> str:
        """What embeddings of the same pixels differ by: the weights (their hash, computed once) and the backend."""
        with self._version_lock:
            if self._version is None:
                self._version = f"{weights_digest(self.model)[:16]}-{self.backend.name}"
            return self._version

    def _submit(self, fn: Callable[..., T], *args: Any, worker: ModelWorker | None = None) -> Future[T]:
        try:
            return (worker or self.worker).submit(fn, *args)
        except WorkerBusy as err:
            raise ServiceBusy(str(err), self.settings.retry_after_s) from err

    async def _result(self, future: Future[T]) -> T:
        # shield: a caller that goes away must not cancel work another request may share.
        try:
            return await asyncio.shield(asyncio.wrap_future(future))
        except ValueError as err:
            raise InvalidRequest(str(err)) from err

    def _embed(self, rgb: np.ndarray) -> CachedImage:
        return CachedImage(SamPredictor(self.model, self.backend, self.embeddings).embed(rgb), rgb)

    def _segment(self, image: CachedImage, prompt: Prompt, request: SegmentRequest) -> Results:
        """Decode one object on the cached embedding (runs on the worker)."""
        return segment_prompts(
            SamPredictor(self.model, self.backend),
            image.embedding,
            [prompt],
            image.pixels,
            multimask_output=request.multimask,
            keep_logits=request.return_logits,
        )


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000.0, 2)
