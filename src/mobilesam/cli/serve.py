"""`mobilesam serve`: the HTTP service and the click-to-segment page."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import typer

from ..registry import model_name
from .common import (
    BACKEND_OPTION,
    DEVICE_OPTION,
    EMBEDDINGS_OPTION,
    HALF_OPTION,
    MAX_PIXELS_OPTION,
    MODEL_OPTION,
    ONNX_DIR_OPTION,
    THREADS_OPTION,
    backend_with_half,
    check_backend_options,
    choose_backend,
    fail,
    is_verbose,
    load_model,
)


def serve(
    model: str = MODEL_OPTION,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0 exposes the service to the network)."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="TCP port."),
    cache_mb: float = typer.Option(
        512.0, "--cache-mb", min=0.0, help="Memory for cached image embeddings (and their files), MiB."
    ),
    queue_size: int = typer.Option(
        16, "--queue-size", min=1, help="Model jobs that may wait; beyond that requests get 503 + Retry-After."
    ),
    workers: int = typer.Option(1, "--workers", min=1, help="Threads running the model (1 suits a CPU)."),
    max_upload_mb: float = typer.Option(20.0, "--max-upload-mb", min=0.001, help="Largest image file accepted, MiB."),
    max_pixels: int = MAX_PIXELS_OPTION,
    api_key: str | None = typer.Option(
        None,
        "--api-key",
        envvar="MOBILESAM_API_KEY",
        help="Require this key in the X-API-Key header (prefer the environment variable).",
    ),
    cors_origin: list[str] = typer.Option(
        [], "--cors-origin", help="Allow browser calls from this origin (repeat for more); none by default."
    ),
    label_studio_url: str | None = typer.Option(
        None,
        "--label-studio-url",
        envvar="LABEL_STUDIO_URL",
        help="Label Studio's address, to read the task images it serves (/data/upload/...) for /predict.",
    ),
    label_studio_api_key: str | None = typer.Option(
        None,
        "--label-studio-api-key",
        envvar="LABEL_STUDIO_API_KEY",
        help="Label Studio's access token, sent with those reads (prefer the environment variable).",
    ),
    label_studio_files: Path | None = typer.Option(
        None,
        "--label-studio-files",
        envvar="LOCAL_FILES_DOCUMENT_ROOT",
        exists=True,
        file_okay=False,
        help="Folder of task images given as paths or Label Studio local files (/data/local-files/?d=...).",
    ),
    in_page_decoding: bool = typer.Option(
        True,
        "--in-page-decoding/--no-in-page-decoding",
        help="Let the page decode clicks in the browser (it fetches the decoder graph and each image's embedding); "
        "off: every click is a request to /segment.",
    ),
    device: str = DEVICE_OPTION,
    threads: int | None = THREADS_OPTION,
    backend: str = BACKEND_OPTION,
    half: bool = HALF_OPTION,
    onnx_dir: Path | None = ONNX_DIR_OPTION,
    embeddings: Path | None = EMBEDDINGS_OPTION,
) -> None:
    """Run the HTTP service and the click-to-segment page (http://HOST:PORT/; API docs at /docs)."""
    # Imported here: FastAPI and uvicorn are the optional `serve` extra, which the other commands do without.
    try:
        import uvicorn

        from ..server import ServeSettings, create_app
        from ..server.label_studio import LabelStudioOptions
    except ImportError as err:
        fail(ImportError(f"serve needs FastAPI and uvicorn: pip install 'mobilesam[serve]' ({err})"))
    try:
        settings = ServeSettings(
            model_name="",
            checkpoint=model,
            cache_bytes=int(cache_mb * 2**20),
            max_upload_bytes=int(max_upload_mb * 2**20),
            max_pixels=max_pixels,
            queue_size=queue_size,
            worker_threads=workers,
            api_key=api_key,
            cors_origins=tuple(cors_origin),
            in_page_decoding=in_page_decoding,
            embeddings=None if embeddings is None else str(embeddings),
        )
        label_studio = LabelStudioOptions(label_studio_url, label_studio_api_key, label_studio_files)
    except ValueError as err:
        fail(err, code=2)
    check_backend_options(backend, onnx_dir)
    backend = backend_with_half(backend, half, device, onnx_dir)
    sam = load_model(model, device, threads)
    settings = dataclasses.replace(settings, model_name=model_name(sam))
    chosen = choose_backend(backend, sam, onnx_dir, threads)
    typer.echo(
        f"mobilesam: {settings.model_name} on {sam.device}, backend {chosen.spec.label}; "
        f"page at http://{host}:{port}/ , API docs at http://{host}:{port}/docs"
    )
    try:
        service = create_app(sam, settings, chosen, label_studio)
    except (OSError, ValueError) as err:
        fail(err)
    uvicorn.run(service, host=host, port=port, log_level="debug" if is_verbose() else "info")
