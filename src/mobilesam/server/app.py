"""The FastAPI app: upload an image once, then segment it many times.

Model work runs on a `ModelWorker` (bounded queue, 503 when full); image
embeddings live in a byte-bounded `SingleFlightLRU` keyed by a hash of the
decoded pixels, so the same image is embedded once however often, and
however concurrently, it is uploaded.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import io
import logging
import time
from concurrent.futures import Future
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse
from fastapi.security import APIKeyHeader
from fastapi.staticfiles import StaticFiles
from PIL import Image, UnidentifiedImageError
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from ..automatic import SamAutomaticMaskGenerator
from ..backends import Backend, TorchBackend
from ..embedding import ImageEmbedding
from ..io.images import load_image, pixels_digest
from ..masks import encode_masks
from ..modeling import Sam
from ..predictor import SamPredictor
from ..prompts import Prompt, check_prompt
from ..registry import count_parameters
from .cache import SingleFlightLRU
from .schemas import (
    EverythingMask,
    EverythingRequest,
    EverythingResponse,
    Health,
    ImageInfo,
    ImageUpload,
    ModelInfo,
    ModelList,
    SegmentMask,
    SegmentRequest,
    SegmentResponse,
)
from .worker import ModelWorker, WorkerBusy

logger = logging.getLogger(__name__)

T = TypeVar("T")

STATIC_DIR = Path(__file__).parent / "static"
# Decoders a client may reach; Pillow's rarer formats stay out of an upload's way.
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF")
# Room for base64 (4/3) and multipart headers around a file of max_upload_bytes.
_BODY_OVERHEAD = 64 * 1024
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
    """

    model_name: str = "vit_t"
    checkpoint: str = "random weights"
    cache_bytes: int = 512 * _MIB
    max_upload_bytes: int = 20 * _MIB
    max_pixels: int = 40_000_000
    queue_size: int = 16
    worker_threads: int = 1
    retry_after_s: int = 1
    api_key: str | None = None
    cors_origins: tuple[str, ...] = ()

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


def image_key(rgb: np.ndarray) -> str:
    """The image id: a hash of the (H, W, 3) uint8 pixels, whatever file format they came in."""
    return pixels_digest(rgb)[:32]


def _http_error(status: int, message: str, headers: dict[str, str] | None = None) -> HTTPException:
    return HTTPException(status_code=status, detail=message, headers=headers)


def create_app(model: Sam, settings: ServeSettings | None = None, backend: Backend | None = None) -> FastAPI:
    """The service for one model.

    Args:
        model: The model, in eval mode on its device; only the worker threads run it.
        settings: Limits and sizes; the defaults suit a laptop.
        backend: What embeds uploads and decodes prompts and segment-everything
            (any backend of `model`, `mobilesam.backends.make_backend`; default eager torch).

    Returns:
        The FastAPI app; its worker stops when the app shuts down.
    """
    settings = settings or ServeSettings()
    worker = ModelWorker(settings.queue_size, settings.worker_threads)
    cache: SingleFlightLRU[CachedImage] = SingleFlightLRU(settings.cache_bytes, lambda image: image.nbytes)

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # noqa: ANN202 - FastAPI's own lifespan type
        yield
        await run_in_threadpool(worker.close)

    app = FastAPI(
        title="mobilesam",
        version="1",
        summary="Prompt-guided segmentation (MobileSAM / SAM): upload an image once, segment it many times.",
        lifespan=lifespan,
    )
    app.state.settings, app.state.worker, app.state.cache, app.state.model = settings, worker, cache, model
    # One backend for every request: clicks on one image reuse the image side
    # of the transformer that it keeps for the last embedding.
    backend = TorchBackend(model) if backend is None else backend
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST"], allow_headers=["*"])

    api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False)

    def check_api_key(key: str | None = Depends(api_key_header)) -> None:
        if settings.api_key is not None and (key is None or not hmac.compare_digest(key.encode(), settings.api_key.encode())):
            raise _http_error(401, "missing or wrong API key: send it in the X-API-Key header")

    v1 = [Depends(check_api_key)] if settings.api_key is not None else []

    async def wait_for(future: Future[T]) -> T:
        # shield: a client that goes away must not cancel work another request may share.
        try:
            return await asyncio.shield(asyncio.wrap_future(future))
        except ValueError as err:
            raise _http_error(422, str(err)) from err

    def submit(fn: Any, *args: Any) -> Future[Any]:
        try:
            return worker.submit(fn, *args)
        except WorkerBusy as err:
            raise _http_error(503, str(err), {"Retry-After": str(settings.retry_after_s)}) from err

    def embed(rgb: np.ndarray) -> CachedImage:
        return CachedImage(SamPredictor(model, backend).embed(rgb), rgb)

    def cached_image(image_id: str) -> CachedImage:
        image = cache.get(image_id)
        if image is None:
            raise _http_error(404, f"image {image_id!r} is not in the cache (never uploaded, or evicted): POST it to /v1/images")
        return image

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/healthz", response_model=Health, tags=["service"])
    async def healthz() -> Health:
        """Liveness, with the state of the embedding cache and the work queue."""
        stats = cache.stats()
        return Health(
            status="ok",
            model=settings.model_name,
            cache_entries=stats.entries,
            cache_bytes=stats.bytes,
            cache_max_bytes=stats.max_bytes,
            cache_hits=stats.hits,
            embeddings_computed=stats.computations,
            queue_waiting=worker.waiting(),
            queue_size=worker.queue_size,
        )

    @app.get("/v1/models", response_model=ModelList, tags=["service"], dependencies=v1)
    async def models() -> ModelList:
        """The model this service runs."""
        return ModelList(
            models=[
                ModelInfo(
                    name=settings.model_name,
                    checkpoint=settings.checkpoint,
                    parameters=count_parameters(model),
                    device=str(model.device),
                    image_size=model.image_encoder.img_size,
                )
            ]
        )

    @app.post(
        "/v1/images",
        response_model=ImageInfo,
        tags=["images"],
        dependencies=v1,
        responses={413: {"description": "File or image too large"}, 415: {"description": "Not an image"}, 503: {"description": "Busy; retry"}},
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}, "required": ["file"]}
                    },
                    "application/json": {"schema": ImageUpload.model_json_schema()},
                },
            }
        },
    )
    async def upload_image(request: Request) -> ImageInfo:
        """Upload an image and compute its embedding (once: the same image again is a cache hit).

        Send `multipart/form-data` with the file in a field named `file`, or
        JSON `{"image": "<base64>", "content_type": "image/png"}`.
        """
        started = time.perf_counter()
        data = await _read_upload(request, settings.max_upload_bytes)
        rgb = await run_in_threadpool(decode_image, data, settings.max_pixels)
        image_id = image_key(rgb)
        try:
            future, lookup = cache.get_or_submit(image_id, lambda: worker.submit(embed, rgb))
        except WorkerBusy as err:
            raise _http_error(503, str(err), {"Retry-After": str(settings.retry_after_s)}) from err
        if lookup == "computed":
            logger.info("embedding image %s (%dx%d)", image_id, rgb.shape[1], rgb.shape[0])
        await wait_for(future)
        return ImageInfo(
            image_id=image_id,
            width=rgb.shape[1],
            height=rgb.shape[0],
            cached=lookup != "computed",
            milliseconds=_ms_since(started),
        )

    @app.post(
        "/v1/images/{image_id}/segment",
        response_model=SegmentResponse,
        response_model_exclude_none=True,
        tags=["images"],
        dependencies=v1,
        responses={404: {"description": "Image not in the cache"}, 503: {"description": "Busy; retry"}},
    )
    async def segment(image_id: str, body: SegmentRequest) -> SegmentResponse:
        """Masks for one object from points, a box and/or a previous mask, on the cached embedding."""
        started = time.perf_counter()
        image = cached_image(image_id)
        prompt = _check_prompt(body, image, model.prompt_encoder.mask_input_size)
        masks = await wait_for(submit(_segment, model, backend, image, prompt, body.multimask, body.format, body.return_logits))
        h, w = image.original_size
        return SegmentResponse(image_id=image_id, width=w, height=h, masks=masks, milliseconds=_ms_since(started))

    @app.post(
        "/v1/images/{image_id}/everything",
        response_model=EverythingResponse,
        tags=["images"],
        dependencies=v1,
        responses={404: {"description": "Image not in the cache"}, 503: {"description": "Busy; retry"}},
    )
    async def everything(image_id: str, body: EverythingRequest | None = None) -> EverythingResponse:
        """Segment everything: a grid of point prompts, filtered and de-duplicated (COCO RLE masks)."""
        started = time.perf_counter()
        image = cached_image(image_id)
        options = (body or EverythingRequest()).model_dump()
        try:
            generator = SamAutomaticMaskGenerator(model, output_mode="coco_rle", backend=backend, **options)
        except ValueError as err:
            raise _http_error(422, str(err)) from err
        records = await wait_for(submit(_everything, generator, image))
        h, w = image.original_size
        return EverythingResponse(image_id=image_id, width=w, height=h, masks=records, milliseconds=_ms_since(started))

    return app


async def _read_upload(request: Request, max_bytes: int) -> bytes:
    """The image file from a multipart or JSON body, at most `max_bytes` (413 beyond, 415 if not an image type)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in ("multipart/form-data", "application/json"):
        raise _http_error(
            415,
            f"send multipart/form-data with the image in a field named 'file', or application/json "
            f"{{\"image\": \"<base64>\"}}; got content type {content_type or 'none'!r}",
        )
    body = await _read_body(request, max_bytes * 4 // 3 + _BODY_OVERHEAD)
    if content_type == "application/json":
        try:
            upload = ImageUpload.model_validate_json(body)
        except ValidationError as err:
            raise _http_error(422, f"JSON upload must be {{\"image\": \"<base64>\", \"content_type\": \"image/...\"}}: {err.errors()[0]['msg']}") from err
        text, file_type = upload.image, upload.content_type
        if text.startswith("data:") and "," in text:
            header, text = text.split(",", 1)
            file_type = header[5:].split(";")[0] or file_type
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as err:
            raise _http_error(422, f"'image' is not valid base64: {err}") from err
    else:
        async def replay() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        form = await Request(request.scope, replay).form(max_files=1, max_fields=4)
        try:
            file = form.get("file")
            if not isinstance(file, UploadFile):
                raise _http_error(422, "multipart upload needs the image file in a field named 'file'")
            file_type, data = file.content_type or "", await file.read()
        finally:
            await form.close()
    if not file_type.lower().startswith("image/"):
        raise _http_error(415, f"only images are accepted, got content type {file_type or 'none'!r}")
    if len(data) > max_bytes:
        raise _http_error(413, f"the image file has {len(data):,} bytes; the limit is {max_bytes:,}")
    return data


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _http_error(413, f"the request has {int(declared):,} bytes; the limit is {limit:,}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _http_error(413, f"the request exceeds {limit:,} bytes")
    return bytes(body)


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """An uploaded file as (H, W, 3) uint8 RGB, its size checked before the pixels are decoded.

    Raises:
        HTTPException: 415 if it is not a readable image, 413 if it has more than `max_pixels` pixels.
    """
    try:
        image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
        width, height = image.size
        if width * height > max_pixels:
            raise _http_error(413, f"the image has {width}x{height} = {width * height:,} pixels; the limit is {max_pixels:,}")
        image.load()
    except Image.DecompressionBombError as err:
        raise _http_error(413, f"the image has too many pixels: {err}") from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise _http_error(415, f"not a readable image ({', '.join(IMAGE_FORMATS)}): {err}") from err
    return load_image(image)


def _check_prompt(body: SegmentRequest, image: CachedImage, mask_size: tuple[int, int]) -> Prompt:
    """The request's prompt, checked once (the library's `check_prompt`, plus the service's own rules), as 422s."""
    try:
        if body.points is None and body.labels is not None:
            raise ValueError("labels were given without points")
        if body.points is None and body.box is None and body.mask_input is None:
            raise ValueError("give at least one prompt: points (with labels), a box, or mask_input")
        labels = body.labels if body.labels is not None or body.points is None else [1] * len(body.points)
        mask_input = None if body.mask_input is None else _decode_logits(body.mask_input, mask_size)
        return check_prompt(image.original_size, mask_size, body.points, labels, body.box, mask_input)
    except ValueError as err:
        raise _http_error(422, str(err)) from err


def _decode_logits(value: str | list[list[float]], size: tuple[int, int]) -> Any:
    if not isinstance(value, str):
        return value
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as err:
        raise ValueError(f"mask_input is not valid base64: {err}") from err
    if len(raw) != 4 * size[0] * size[1]:
        raise ValueError(f"mask_input must be {size[0]}x{size[1]} float32 values ({4 * size[0] * size[1]} bytes), got {len(raw)} bytes")
    return np.frombuffer(raw, dtype="<f4").reshape(size)


def _segment(
    model: Sam, backend: Backend, image: CachedImage, prompt: Prompt, multimask: bool, mask_format: str, return_logits: bool
) -> list[SegmentMask]:
    """Decode on the cached embedding and encode the masks, best first (runs on the worker)."""
    predictor = SamPredictor(model, backend)
    predictor.set_embedding(image.embedding)
    masks, scores, logits = predictor.predict_prompt(prompt, multimask)
    order = np.argsort(-scores, kind="stable")
    masks = masks[order]  # (C, H, W) bool, best first
    return [
        SegmentMask(
            score=encoded.score,
            area=encoded.area,
            bbox=[float(v) for v in encoded.bbox],
            segmentation=encoded.rle if mask_format == "coco_rle" else None,
            png=_png_base64(mask) if mask_format == "png" else None,
            low_res_logits=base64.b64encode(logits[index].astype("<f4").tobytes()).decode() if return_logits else None,
        )
        for encoded, mask, index in zip(encode_masks(masks, scores[order]), masks, order.tolist())
    ]


def _everything(generator: SamAutomaticMaskGenerator, image: CachedImage) -> list[EverythingMask]:
    """The generator on the uploaded image and its cached embedding (runs on the worker)."""
    return [
        EverythingMask(
            segmentation=record["segmentation"],
            area=record["area"],
            bbox=record["bbox"],
            predicted_iou=record["predicted_iou"],
            stability_score=record["stability_score"],
            point_coords=record["point_coords"],
            crop_box=record["crop_box"],
        )
        for record in generator.generate(image.pixels, embedding=image.embedding)
    ]


def _png_base64(mask: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000.0, 2)
