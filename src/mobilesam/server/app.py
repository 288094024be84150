"""The FastAPI app: thin routes over a `SegmentationService`.

Each route parses its request, calls one service method and returns its
answer; a `ServiceError` becomes an HTTP error in one exception handler.
Every response makes the page cross-origin isolated, which the WebAssembly
threads of its in-page decoder need.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import mimetypes
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import APIKeyHeader
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders, UploadFile
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..backends import Backend
from ..modeling import Sam
from .errors import InvalidRequest, PayloadTooLarge, ServiceError, UnsupportedMedia
from .label_studio import LabelStudioBackend, LabelStudioOptions, basic_auth_password
from .schemas import (
    ErrorBody,
    EverythingRequest,
    EverythingResponse,
    Health,
    ImageInfo,
    ImageUpload,
    LabelStudioHealth,
    LabelStudioPredictRequest,
    LabelStudioPredictResponse,
    LabelStudioSetup,
    LabelStudioSetupResponse,
    ModelList,
    SegmentRequest,
    SegmentResponse,
)
from .service import EmbeddingDtype, SegmentationService, ServeSettings

STATIC_DIR = Path(__file__).parent / "static"
# Every error status the API answers, each with the one error body; routes list theirs.
_ERRORS = {
    400: "The body could not be parsed (malformed JSON or multipart)",
    401: "Missing or wrong API key (only when the service was started with --api-key)",
    404: "The image is not in the cache (never uploaded, or evicted): upload it again",
    413: "The file, the request or the image (pixels) is larger than the service's limit",
    415: "Not an image, or not one of the decoded formats (PNG, JPEG, WebP, BMP, TIFF, GIF)",
    422: "The request does not fit the schema, or the prompt does not fit the image or the model",
    503: "The work queue is full: retry after the Retry-After header's seconds",
}
# The browser revalidates what it cached (If-None-Match) and may keep it only for this user.
_CACHE_CONTROL = "private, no-cache"
_BINARY = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
_NOT_MODIFIED = {"description": "Not modified: the If-None-Match header named the current ETag; use the cached copy"}
_CACHE_HEADERS = {
    "ETag": {"description": "Entity tag of this answer; send it back in If-None-Match.", "schema": {"type": "string"}},
    "Cache-Control": {"description": f"`{_CACHE_CONTROL}`: cache, and revalidate before each use.", "schema": {"type": "string"}},
}
# What the embedding route's headers say, and the page reads (exposed to other origins under CORS).
_EMBEDDING_HEADERS = {
    "X-Embedding-Shape": "(1, C, h, w), comma-separated: 1,256,64,64 for SAM's 1024 input",
    "X-Embedding-Dtype": "float16 or float32, as asked",
    "X-Original-Size": "H,W of the uploaded image",
    "X-Input-Size": "h,w of the image resized for the model, before padding (prompt coordinates scale by h/H, w/W)",
}
# Served with these types whatever the host's MIME database says: browsers compile
# WebAssembly as it streams only from application/wasm, and load modules only as JavaScript.
_MEDIA_TYPES = {".wasm": "application/wasm", ".mjs": "text/javascript"}
# Room for base64 (4/3) and multipart headers around a file of max_upload_bytes.
_BODY_OVERHEAD = 64 * 1024


def create_app(
    model: Sam,
    settings: ServeSettings | None = None,
    backend: Backend | str = "auto",
    label_studio: LabelStudioOptions | None = None,
) -> FastAPI:
    """The service for one model.

    Args:
        model: The model, in eval mode on its device; only the worker threads run it.
        settings: Limits and sizes; the defaults suit a laptop.
        backend: What embeds uploads and decodes prompts and segment-everything
            (a backend of `model` or its name; default "auto", the fastest faithful engine here).
        label_studio: Where the Label Studio ML backend routes (/health, /setup, /predict) read task images.

    Returns:
        The FastAPI app; its worker stops when the app shuts down.
    """
    service = SegmentationService(model, settings, backend)
    settings = service.settings
    for suffix, media_type in _MEDIA_TYPES.items():
        mimetypes.add_type(media_type, suffix)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await run_in_threadpool(service.close)

    app = FastAPI(
        title="mobilesam",
        version="1",
        summary="Prompt-guided segmentation (MobileSAM / SAM): upload an image once, segment it many times.",
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.settings, app.state.worker, app.state.cache, app.state.model = settings, service.worker, service.cache, model
    app.add_exception_handler(ServiceError, _error_response)
    app.add_exception_handler(RequestValidationError, _validation_error_response)
    app.add_middleware(CrossOriginIsolation)
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["*"],
            expose_headers=[*_EMBEDDING_HEADERS, "ETag"],
        )

    api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False)

    def check_api_key(key: str | None = Depends(api_key_header)) -> None:
        if settings.api_key is not None and (key is None or not hmac.compare_digest(key.encode(), settings.api_key.encode())):
            raise HTTPException(401, "missing or wrong API key: send it in the X-API-Key header")

    v1 = [Depends(check_api_key)] if settings.api_key is not None else []

    def check_label_studio_key(request: Request) -> None:
        # Label Studio authenticates to a model with HTTP Basic: the password is the key, any user name.
        sent = request.headers.get("X-API-Key") or basic_auth_password(request.headers.get("Authorization"))
        if settings.api_key is not None and (sent is None or not hmac.compare_digest(sent.encode(), settings.api_key.encode())):
            raise HTTPException(
                401,
                "missing or wrong API key: set it as the Basic auth password of the model in Label Studio",
                headers={"WWW-Authenticate": 'Basic realm="mobilesam"'},
            )

    label_studio_backend = LabelStudioBackend(service, label_studio)
    ls_auth = [Depends(check_label_studio_key)] if settings.api_key is not None else []

    def errors(*statuses: int, described: dict[int, str] | None = None) -> dict[int | str, dict[str, Any]]:
        """The OpenAPI `responses` of a /v1 route: its error statuses, and 401 where a key is required.

        `described` says what a status means on this route, where that is not the usual meaning.
        """
        listed = (*statuses, 401) if settings.api_key is not None else statuses
        descriptions = {**_ERRORS, **(described or {})}
        return {status: {"model": ErrorBody, "description": descriptions[status]} for status in sorted(listed)}

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        # The page will ask for the decoder graph: its export (seconds, once per weights) starts now.
        service.prepare_decoder()
        return FileResponse(STATIC_DIR / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/healthz", response_model=Health, tags=["service"])
    async def healthz() -> Health:
        """Liveness, with the state of the embedding cache and the work queue."""
        return service.health()

    @app.get("/v1/models", response_model=ModelList, tags=["service"], dependencies=v1, responses=errors())
    async def models() -> ModelList:
        """The model this service runs."""
        return service.models()

    @app.post(
        "/v1/images",
        response_model=ImageInfo,
        tags=["images"],
        dependencies=v1,
        responses=errors(400, 413, 415, 422, 503),
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "properties": {"file": {"type": "string", "format": "binary"}},
                            "required": ["file"],
                        }
                    },
                    "application/json": {"schema": ImageUpload.model_json_schema()},
                },
            }
        },
    )
    async def upload_image(request: Request) -> ImageInfo:
        """Upload an image and compute its embedding (once: the same image again is a cache hit).

        Send `multipart/form-data` with the file in a field named `file`, or
        JSON `{"image": "<base64>", "content_type": "image/png"}`. The file's
        type may be left out (or `application/octet-stream`): the bytes decide.
        """
        data, content_type = await _read_upload(request, settings.max_upload_bytes)
        return await service.upload(data, content_type)

    @app.post(
        "/v1/images/{image_id}/segment",
        response_model=SegmentResponse,
        response_model_exclude_none=True,
        tags=["images"],
        dependencies=v1,
        responses=errors(400, 404, 422, 503),
    )
    async def segment(image_id: str, body: SegmentRequest) -> SegmentResponse:
        """Masks for one object from points, a box and/or a previous mask, on the cached embedding."""
        return await service.segment(image_id, body)

    @app.post(
        "/v1/images/{image_id}/everything",
        response_model=EverythingResponse,
        tags=["images"],
        dependencies=v1,
        responses=errors(400, 404, 422, 503),
    )
    async def everything(image_id: str, body: EverythingRequest | None = None) -> EverythingResponse:
        """Segment everything: a grid of point prompts, filtered and de-duplicated (COCO RLE masks)."""
        return await service.everything(image_id, body)

    @app.get(
        "/v1/images/{image_id}/embedding",
        summary="Image embedding",
        response_class=Response,
        tags=["in-page decoding"],
        dependencies=v1,
        responses={
            200: {
                "description": "The embedding's raw little-endian values in C order",
                "content": _BINARY,
                "headers": {
                    **{name: {"description": text, "schema": {"type": "string"}} for name, text in _EMBEDDING_HEADERS.items()},
                    **_CACHE_HEADERS,
                },
            },
            304: _NOT_MODIFIED,
            **errors(404, 422),
        },
    )
    async def embedding(
        request: Request,
        image_id: str,
        dtype: EmbeddingDtype = Query("float16", description="What the values are sent as (float16: half the bytes)."),
    ) -> Response:
        """The image's embedding, for decoding prompts in the page (with the graph of /v1/decoder.onnx).

        The body is the (1, C, h, w) values; the headers give the shape, the dtype
        and the two sizes that map prompt coordinates into the model's frame.
        Send the ETag back in If-None-Match to get 304 while it is unchanged.
        """
        payload = await service.embedding(image_id, dtype)
        headers = {
            "X-Embedding-Shape": ",".join(str(n) for n in payload.shape),
            "X-Embedding-Dtype": payload.dtype,
            "X-Original-Size": ",".join(str(n) for n in payload.original_size),
            "X-Input-Size": ",".join(str(n) for n in payload.input_size),
            "ETag": payload.etag,
            "Cache-Control": _CACHE_CONTROL,
        }
        if _etag_matches(request.headers.get("if-none-match"), payload.etag):
            return Response(status_code=304, headers=headers)
        data = await run_in_threadpool(payload.to_bytes)
        return Response(data, media_type="application/octet-stream", headers=headers)

    @app.get(
        "/v1/decoder.onnx",
        summary="Decoder graph (ONNX)",
        response_class=Response,
        tags=["in-page decoding"],
        dependencies=v1,
        responses={
            200: {"description": "The decoder graph (ONNX)", "content": _BINARY, "headers": _CACHE_HEADERS},
            304: _NOT_MODIFIED,
            **errors(
                404,
                503,
                described={
                    404: "In-page decoding is off (mobilesam serve --no-in-page-decoding)",
                    503: "The decoder graph could not be exported (the detail says why, e.g. onnx is not installed)",
                },
            ),
        },
    )
    async def decoder_graph(request: Request) -> Response:
        """The served model's mask decoder as an ONNX graph, for decoding prompts in the page (onnxruntime-web).

        SAM's ONNX decoder contract: inputs image_embeddings (1, 256, 64, 64), point_coords (B, N, 2)
        and point_labels (B, N) in the model's frame, mask_input (B, 1, 256, 256), has_mask_input (1,),
        orig_im_size (2,), all float32; outputs masks (B, 4, H, W) logits, iou_predictions (B, 4) and
        low_res_masks. Exported once per weights (later runs reuse it), from when the page loads; the first
        request may wait for it. Send the ETag back in If-None-Match to get 304 while it is unchanged.
        """
        graph = await service.decoder()
        headers = {"ETag": graph.etag, "Cache-Control": _CACHE_CONTROL}
        if _etag_matches(request.headers.get("if-none-match"), graph.etag):
            return Response(status_code=304, headers=headers)
        return Response(graph.data, media_type="application/octet-stream", headers=headers)

    @app.get("/health", response_model=LabelStudioHealth, tags=["label studio"])
    async def label_studio_health() -> LabelStudioHealth:
        """Label Studio's health check of a connected model."""
        return label_studio_backend.health()

    @app.post(
        "/setup",
        response_model=LabelStudioSetupResponse,
        tags=["label studio"],
        dependencies=ls_auth,
        responses=errors(400, 422),
    )
    async def label_studio_setup(body: LabelStudioSetup) -> LabelStudioSetupResponse:
        """Label Studio connects a project: its labeling config needs a BrushLabels tag on an image."""
        return label_studio_backend.setup(body)

    @app.post(
        "/predict",
        response_model=LabelStudioPredictResponse,
        tags=["label studio"],
        dependencies=ls_auth,
        responses=errors(400, 413, 415, 422, 503),
    )
    async def label_studio_predict(body: LabelStudioPredictRequest) -> LabelStudioPredictResponse:
        """Brush masks (Label Studio RLE) for the annotator's keypoints and rectangles on the task's image."""
        return await label_studio_backend.predict(body)

    return app


class CrossOriginIsolation:
    """ASGI middleware: every response but the API docs isolates the page from other origins (COOP and COEP).

    Browsers share memory between WebAssembly threads only on a cross-origin
    isolated page; the page's in-page decoder (onnxruntime-web) runs on them.
    FastAPI's /docs and /redoc load their scripts from a CDN, which COEP could block.
    """

    def __init__(self, app: ASGIApp, exempt: tuple[str, ...] = ("/docs", "/redoc")) -> None:
        self.app = app
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(self.exempt):
            await self.app(scope, receive, send)
            return

        async def send_isolated(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["Cross-Origin-Opener-Policy"] = "same-origin"
                headers["Cross-Origin-Embedder-Policy"] = "require-corp"
            await send(message)

        await self.app(scope, receive, send_isolated)


def _etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an If-None-Match header names `etag` (weak comparison, as RFC 9110 asks of it) or is `*`."""
    if not if_none_match:
        return False
    sent = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
    return "*" in sent or etag in sent


async def _error_response(request: Request, err: ServiceError) -> JSONResponse:
    """A service error answered as FastAPI answers an `HTTPException`: `{"detail": message}`."""
    return JSONResponse({"detail": str(err)}, status_code=err.status_code, headers=err.headers)


async def _validation_error_response(request: Request, err: RequestValidationError) -> JSONResponse:
    """A body that does not fit the schema, in the one error shape: `{"detail": "where: what"}`.

    A body that cannot be parsed at all (malformed JSON) is a 400, as the documentation says.
    """
    first = err.errors()[0]
    where = ".".join(str(part) for part in first.get("loc", ()) if part != "body") or "body"
    status = 400 if first.get("type") == "json_invalid" else 422
    return JSONResponse({"detail": f"{where}: {first.get('msg', 'invalid')}"}, status_code=status)


async def _read_upload(request: Request, max_bytes: int) -> tuple[bytes, str]:
    """The image file and its content type from a multipart or JSON body of at most about `max_bytes`.

    Raises:
        UnsupportedMedia: The body is neither multipart/form-data nor JSON.
        PayloadTooLarge: The body is larger than a file of `max_bytes` needs.
        InvalidRequest: The body does not hold an image file where it should.
        HTTPException: 400: the body is cut short (the client hung up), or is not JSON or multipart at all.
    """
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in ("multipart/form-data", "application/json"):
        raise UnsupportedMedia(
            f"send multipart/form-data with the image in a field named 'file', or application/json "
            f'{{"image": "<base64>"}}; got content type {content_type or "none"!r}'
        )
    body = await _read_body(request, max_bytes * 4 // 3 + _BODY_OVERHEAD)
    if content_type == "application/json":
        return _json_upload(body)

    # The body is read already (to bound it), so the form parser gets it replayed.
    async def replay() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    form = await Request(request.scope, replay).form(max_files=1, max_fields=4)
    try:
        file = form.get("file")
        if not isinstance(file, UploadFile):
            raise InvalidRequest("multipart upload needs the image file in a field named 'file'")
        return await file.read(), file.content_type or ""
    finally:
        await form.close()


def _json_upload(body: bytes) -> tuple[bytes, str]:
    """The image file and its content type from an `ImageUpload` JSON body (a data: URL's type wins)."""
    try:
        upload = ImageUpload.model_validate_json(body)
    except ValidationError as err:
        if err.errors()[0]["type"] == "json_invalid":  # not JSON at all: a 400, as on the other routes
            raise HTTPException(400, f"the body is not valid JSON: {err.errors()[0]['msg']}") from err
        raise InvalidRequest(
            f'JSON upload must be {{"image": "<base64>", "content_type": "image/..."}}: {err.errors()[0]["msg"]}'
        ) from err
    text, file_type = upload.image, upload.content_type
    if text.startswith("data:") and "," in text:
        header, text = text.split(",", 1)
        file_type = header[5:].split(";")[0] or file_type
    try:
        return base64.b64decode(text, validate=True), file_type
    except (binascii.Error, ValueError) as err:
        raise InvalidRequest(f"'image' is not valid base64: {err}") from err


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused as soon as it is known to exceed `limit` bytes.

    A client that hangs up before the whole body has come gets the 400 that
    FastAPI gives a JSON body cut short (sent to no one), not an exception
    logged as a server error.
    """
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the request has {int(declared):,} bytes; the limit is {limit:,}")
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise PayloadTooLarge(f"the request exceeds {limit:,} bytes")
    except ClientDisconnect:
        raise HTTPException(400, f"the client hung up after {len(body):,} bytes of the body") from None
    return bytes(body)
