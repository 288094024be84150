"""Under load, nothing grows: a bounded mixed load on a real socket, then the same server, and its memory, as before.

Eight clients on loopback (uvicorn in a thread of this process) mix uploads of
generated images (different sizes, PNG and JPEG, multipart and JSON, some
repeated), clicks (points, boxes, multimask, PNG masks, logits),
segment-everything on small grids, requests that must be refused (a
non-image, malformed JSON or multipart, points far outside the image, an
unknown image id, a file or a body over the limit, too many pixels) and
clients that hang up mid-upload, mid-click or while their answer is being
computed. Afterwards the service still answers /healthz; every answer was
either right (200, the schema's body, masks that decode to the image's size)
or a refusal with the status its fault has, one that the route documents in
the app's own /openapi.json, and the one error body; nothing was logged at
ERROR; the RSS of the process (service and clients) grew by at most the
cache's limit plus `RSS_MARGIN_MIB`, and what malloc holds by at most what
the cache gained plus `ALLOCATED_MARGIN_MIB` (see `measure_memory`).

The mix lives here (`Mix`) and `benchmarks/serve_load.py --mixed` runs it for figures.
"""

from __future__ import annotations

import asyncio
import base64
import ctypes
import ctypes.util
import dataclasses
import functools
import gc
import io
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")
from pycocotools import mask as mask_utils  # noqa: E402

from images import generated_image  # noqa: E402
from mobilesam.server import ServeSettings, create_app, image_key  # noqa: E402
from mobilesam.server.schemas import EverythingResponse, ImageInfo, SegmentResponse  # noqa: E402

MIB = 2**20
# Small, so that the load fills it several times over and eviction runs all along.
CACHE_BYTES = 16 * MIB
MAX_UPLOAD = 256 * 1024
MAX_SIDE = (480, 640)  # (H, W) of the largest image uploaded; max_pixels is its pixel count
SETTINGS = ServeSettings(
    cache_bytes=CACHE_BYTES,
    max_upload_bytes=MAX_UPLOAD,
    max_pixels=MAX_SIDE[0] * MAX_SIDE[1],
    # Deep enough that eight clients are never refused; a 503 would still be a documented answer.
    queue_size=64,
)
# RSS may grow by the cache's limit plus RSS_MARGIN_MIB, for free heap that malloc_trim cannot
# give back (see `measure_memory`). Measured with VmHWM: one everything on the largest image
# peaks ~110 MiB above the RSS before it, an upload 10-27 MiB, a click ~8 MiB, all freed
# after; the two lanes, the decode threads and the clients run them at once, so long-lived
# blocks (cached pixels, the clients' buffers) land between them and keep partly used pages
# resident. Measured here, after malloc_trim: +32 to +57 MiB over the first load, the cache's
# +14 MiB included, then flat (922 -> 930 MiB over eight more rounds, 3,600 requests). Without
# malloc_trim RSS reads 25-65 MiB higher here (~450 MiB with the full-size model). The margin is
# above what was seen, and below the ~110 MiB that one everything's buffers would add if kept.
RSS_MARGIN_MIB = 64
# What malloc has handed out may grow by what the cache gained plus ALLOCATED_MARGIN_MIB: the
# backend keeps the image tokens of the last embedding (an evicted one, maybe: < 1 MiB at
# 256) and the threads the load starts keep small per-thread caches. Measured: +0.5 to +1.6
# MiB beyond the cache's growth; keeping every computed embedding (an unbounded cache) adds
# ~13 MiB here, and a leak of 20 KiB per request would add 8 MiB.
ALLOCATED_MARGIN_MIB = 8
CLIENTS, REQUESTS = 8, 50
WARM_UP_REQUESTS = 10  # per client, before the baseline
UNKNOWN_ID = "0" * 32

# Kinds of request and how often each comes (weights, normalised), per client.
KINDS = {
    "upload": 0.24,
    "click": 0.34,
    "everything": 0.08,
    "not_image": 0.04,
    "bad_json": 0.03,
    "bad_json_upload": 0.02,
    "bad_multipart": 0.02,
    "outside": 0.04,
    "unknown_id": 0.04,
    "oversize_file": 0.03,
    "oversize_body": 0.03,
    "too_many_pixels": 0.02,
    # Raw sockets: headers and part of the body, or the whole request, then closed without reading.
    "hang_up_upload": 0.06,
    "hang_up_click": 0.02,
    "hang_up_waiting": 0.04,
}
HANG_UPS = ("hang_up_upload", "hang_up_click", "hang_up_waiting")  # no answer comes back
# The statuses each kind may get besides its documented-ness: a good request is a 200 or
# "come back" (evicted, busy); a bad one is refused with the status its fault has.
EXPECTED = {
    "upload": {200, 503},
    "click": {200, 404, 503},
    "everything": {200, 404, 503},
    "not_image": {415},
    "bad_json": {400},
    "bad_json_upload": {400},
    "bad_multipart": {400},
    "outside": {422, 404},
    "unknown_id": {404},
    "oversize_file": {413},
    "oversize_body": {413},
    "too_many_pixels": {413},
}
ROUTES = {
    "upload": "/v1/images",
    "not_image": "/v1/images",
    "bad_json_upload": "/v1/images",
    "bad_multipart": "/v1/images",
    "oversize_file": "/v1/images",
    "oversize_body": "/v1/images",
    "too_many_pixels": "/v1/images",
    "click": "/v1/images/{image_id}/segment",
    "bad_json": "/v1/images/{image_id}/segment",
    "outside": "/v1/images/{image_id}/segment",
    "unknown_id": "/v1/images/{image_id}/segment",
    "everything": "/v1/images/{image_id}/everything",
}


@dataclasses.dataclass(frozen=True)
class Upload:
    """One image file to upload, with what the service must say about it."""

    name: str
    data: bytes
    content_type: str
    height: int
    width: int
    image_id: str


@dataclasses.dataclass(frozen=True)
class Answer:
    """One request of the mix: its kind, status (None: the client hung up), latency and what was wrong with it."""

    kind: str
    status: int | None
    seconds: float
    problem: str | None = None


def make_uploads(count: int = 64, seed: int = 0) -> list[Upload]:
    """`count` distinct images from 32x32 to MAX_SIDE, one in four a JPEG."""
    rng = np.random.default_rng(seed)
    uploads = []
    for i in range(count):
        h, w = int(rng.integers(32, MAX_SIDE[0] + 1)), int(rng.integers(32, MAX_SIDE[1] + 1))
        rgb = generated_image(h, w, seed=1000 + i)
        jpeg = i % 4 == 3
        buffer = io.BytesIO()
        Image.fromarray(rgb).save(buffer, format="JPEG" if jpeg else "PNG")
        if jpeg:  # the id hashes the decoded pixels, which JPEG changes
            rgb = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
        name, kind = (f"image{i}.jpg", "image/jpeg") if jpeg else (f"image{i}.png", "image/png")
        uploads.append(Upload(name, buffer.getvalue(), kind, h, w, image_key(rgb)))
    return uploads


def documented_statuses(client: httpx.Client) -> dict[str, set[int]]:
    """POST route -> the statuses its OpenAPI document lists, read from the running app."""
    paths = client.get("/openapi.json").raise_for_status().json()["paths"]
    return {
        path: {int(code) for code in operations["post"]["responses"]}
        for path, operations in paths.items()
        if "post" in operations
    }


class Mix:
    """The mixed load: each client's requests drawn from `KINDS` by its own seeded generator.

    Args:
        url: The service, http://127.0.0.1:port.
        uploads: The images the clients upload.
        seed: Seeds every client's choices.
    """

    def __init__(self, url: str, uploads: list[Upload], seed: int = 0) -> None:
        self.url = url
        self.host, self.port = url.removeprefix("http://").split(":")
        self.uploads = uploads
        self.seed = seed
        with httpx.Client(base_url=url, timeout=60) as client:
            self.documented = documented_statuses(client)
            self.low_res_side = client.get("/v1/models").raise_for_status().json()["models"][0]["image_size"] // 4
        self._known: dict[str, tuple[int, int]] = {}  # image id -> (H, W) of every image uploaded so far
        self._lock = threading.Lock()

    def run(self, clients: int, requests: int) -> list[Answer]:
        """`requests` requests from each of `clients` concurrent clients; every answer checked."""
        with ThreadPoolExecutor(clients, thread_name_prefix="load-client") as pool:
            parts = [pool.submit(self._client, c, requests) for c in range(clients)]
            return [answer for part in parts for answer in part.result(timeout=600)]

    def one_of_each(self) -> list[Answer]:
        """One request of every kind (the warm-up: lazy imports and first pools of every path)."""
        with httpx.Client(base_url=self.url, timeout=60) as client:
            rng = np.random.default_rng(self.seed)
            return [self.request(client, rng, kind) for kind in KINDS]

    def _client(self, index: int, requests: int) -> list[Answer]:
        rng = np.random.default_rng([self.seed, index])
        names, weights = list(KINDS), np.array(list(KINDS.values()))
        with httpx.Client(base_url=self.url, timeout=60) as client:
            return [self.request(client, rng, str(rng.choice(names, p=weights / weights.sum()))) for _ in range(requests)]

    def request(self, client: httpx.Client, rng: np.random.Generator, kind: str) -> Answer:
        """Send one request of `kind` and check its answer."""
        target = self._known_image(rng)
        if target is None and kind in ("click", "everything", "outside", "hang_up_click", "hang_up_waiting"):
            kind = "upload"  # nothing to segment yet
        started = time.perf_counter()
        if kind == "hang_up_upload":
            request = _upload_request(client, self.uploads[int(rng.integers(len(self.uploads)))])
            self._hang_up(request, fraction=rng.uniform(0.1, 0.9))
            return Answer(kind, None, time.perf_counter() - started)
        if kind == "hang_up_click":
            image_id, _ = target
            request = client.build_request(
                "POST", f"/v1/images/{image_id}/segment", json={"points": [[1.0, 1.0]], "multimask": True}
            )
            self._hang_up(request, fraction=0.5)
            return Answer(kind, None, time.perf_counter() - started)
        if kind == "hang_up_waiting":
            image_id, _ = target
            body = {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
            self._hang_up(client.build_request("POST", f"/v1/images/{image_id}/everything", json=body), fraction=1.0)
            return Answer(kind, None, time.perf_counter() - started)
        upload = self.uploads[int(rng.integers(len(self.uploads)))]
        request, check = self._build(client, rng, kind, upload, target)
        try:
            response = client.send(request)
        except httpx.TransportError as err:
            return Answer(kind, None, time.perf_counter() - started, f"no answer: {err!r}")
        seconds = time.perf_counter() - started
        try:
            problem = self._check(kind, response, check)
        except Exception as err:  # a body that breaks the checks is itself the finding
            problem = f"unreadable answer ({err!r}): {response.text[:200]}"
        if problem is None and kind == "upload" and response.status_code == 200:
            with self._lock:
                self._known[upload.image_id] = (upload.height, upload.width)
        return Answer(kind, response.status_code, seconds, problem)

    def _known_image(self, rng: np.random.Generator) -> tuple[str, tuple[int, int]] | None:
        with self._lock:
            if not self._known:
                return None
            ids = sorted(self._known)
            image_id = ids[int(rng.integers(len(ids)))]
            return image_id, self._known[image_id]

    def _build(
        self, client: httpx.Client, rng: np.random.Generator, kind: str, upload: Upload, target: Any
    ) -> tuple[httpx.Request, Any]:
        """The request of `kind` and what its answer is checked against."""
        if kind == "upload":
            return _upload_request(client, upload, as_json=rng.random() < 0.2), upload
        if kind == "bad_json_upload":
            return client.build_request(
                "POST", "/v1/images", content=b'{"image": "iVBO', headers={"content-type": "application/json"}
            ), None
        if kind == "bad_multipart":
            content = b"these bytes are no multipart body"
            return client.build_request(
                "POST", "/v1/images", content=content, headers={"content-type": "multipart/form-data; boundary=b"}
            ), None
        if kind == "not_image":
            file = ("notes.txt", b"these bytes are no image " * 20, str(rng.choice(["text/plain", "application/octet-stream"])))
            return client.build_request("POST", "/v1/images", files={"file": file}), None
        if kind == "oversize_file":  # under the body limit, over the file limit: refused by the service
            return client.build_request(
                "POST", "/v1/images", files={"file": ("big.png", b"\x89PNG" + bytes(MAX_UPLOAD), "image/png")}
            ), None
        if kind == "oversize_body":  # over the body limit, declared in Content-Length: refused before it is read
            return client.build_request(
                "POST", "/v1/images", files={"file": ("huge.png", bytes(3 * MAX_UPLOAD), "image/png")}
            ), None
        if kind == "too_many_pixels":
            buffer = io.BytesIO()
            Image.new("RGB", (MAX_SIDE[1] + 1, MAX_SIDE[0])).save(buffer, format="PNG")
            return client.build_request("POST", "/v1/images", files={"file": ("wide.png", buffer.getvalue(), "image/png")}), None
        if kind == "unknown_id":
            return client.build_request("POST", f"/v1/images/{UNKNOWN_ID}/segment", json={"points": [[1, 1]]}), None
        image_id, (h, w) = target
        path = f"/v1/images/{image_id}"
        if kind == "bad_json":
            content, headers = b'{"points": [[1, 2]', {"content-type": "application/json"}
            return client.build_request("POST", f"{path}/segment", content=content, headers=headers), None
        if kind == "outside":
            # Beyond the tolerance for points a little off the image (`mobilesam.prompts.OUTSIDE_TOLERANCE`).
            return client.build_request("POST", f"{path}/segment", json={"points": [[3.0 * w + 5, h / 2]]}), None
        if kind == "everything":
            body = {"points_per_side": int(rng.integers(2, 5)), "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
            return client.build_request("POST", f"{path}/everything", json=body), (image_id, h, w)
        # A click: points, a box, or both; sometimes three candidates, PNG masks or logits back.
        body: dict[str, Any] = {}
        prompt = int(rng.integers(3))
        if prompt != 1:
            n = int(rng.integers(1, 4))
            body["points"] = np.column_stack([rng.uniform(0, w - 1, n), rng.uniform(0, h - 1, n)]).round(1).tolist()
            body["labels"] = rng.integers(0, 2, n).tolist()
        if prompt != 0:
            x, y = sorted(rng.uniform(0, w - 1, 2).round(1).tolist()), sorted(rng.uniform(0, h - 1, 2).round(1).tolist())
            body["box"] = [x[0], y[0], x[1], y[1]]
        body["multimask"] = bool(rng.random() < 0.3)
        body["format"] = "png" if rng.random() < 0.3 else "coco_rle"
        body["return_logits"] = bool(rng.random() < 0.2)
        return client.build_request("POST", f"{path}/segment", json=body), (image_id, h, w, body)

    def _check(self, kind: str, response: httpx.Response, expected: Any) -> str | None:
        """None if the answer is right or a documented refusal; else what is wrong with it."""
        status, route = response.status_code, ROUTES[kind]
        if status not in self.documented[route]:
            return f"status {status} is not documented for POST {route} ({sorted(self.documented[route])}): {response.text[:200]}"
        if status not in EXPECTED[kind]:
            return f"status {status} for a {kind} request, expected one of {sorted(EXPECTED[kind])}: {response.text[:200]}"
        if status != 200:
            body = response.json()
            if not (isinstance(body, dict) and set(body) == {"detail"} and isinstance(body["detail"], str) and body["detail"]):
                return f"error body is not {{'detail': '...'}}: {response.text[:200]}"
            if status == 503 and not response.headers.get("retry-after", "").isdigit():
                return "503 without a Retry-After in seconds"
            return None
        if kind == "upload":
            return _check_upload(ImageInfo.model_validate_json(response.content), expected)
        if kind == "everything":
            return _check_everything(EverythingResponse.model_validate_json(response.content), *expected)
        return _check_click(SegmentResponse.model_validate_json(response.content), *expected, self.low_res_side)

    def _hang_up(self, request: httpx.Request, fraction: float) -> None:
        """Send the request's headers and `fraction` of its body on a raw socket, then close it without reading."""
        body = request.read()
        head = f"{request.method} {request.url.raw_path.decode()} HTTP/1.1\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in request.headers.items()) + "\r\n"
        with socket.create_connection((self.host, int(self.port)), timeout=10) as sock:
            sock.sendall(head.encode("latin-1") + body[: int(len(body) * fraction)])


def _upload_request(client: httpx.Client, upload: Upload, as_json: bool = False) -> httpx.Request:
    """A multipart upload of the file, or the JSON one (base64)."""
    if as_json:
        body = {"image": base64.b64encode(upload.data).decode(), "content_type": upload.content_type}
        return client.build_request("POST", "/v1/images", json=body)
    return client.build_request("POST", "/v1/images", files={"file": (upload.name, upload.data, upload.content_type)})


def _check_upload(info: ImageInfo, upload: Upload) -> str | None:
    if (info.height, info.width) != (upload.height, upload.width):
        return f"{upload.name}: size {info.height}x{info.width}, expected {upload.height}x{upload.width}"
    if info.image_id != upload.image_id:
        return f"{upload.name}: id {info.image_id}, expected {upload.image_id}"
    return None


def _check_mask(rle: dict[str, Any], area: int, h: int, w: int) -> str | None:
    if rle["size"] != [h, w]:
        return f"mask size {rle['size']}, image {[h, w]}"
    mask = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()})
    if mask.shape != (h, w) or int(mask.sum()) != area:
        return f"mask decodes to {mask.shape} with {int(mask.sum())} pixels, answer says {area} on {(h, w)}"
    return None


def _check_click(answer: SegmentResponse, image_id: str, h: int, w: int, body: dict[str, Any], low_res_side: int) -> str | None:
    if (answer.image_id, answer.height, answer.width) != (image_id, h, w):
        return f"answer for {answer.image_id} {answer.height}x{answer.width}, asked {image_id} {h}x{w}"
    if len(answer.masks) != (3 if body["multimask"] else 1):
        return f"{len(answer.masks)} masks with multimask={body['multimask']}"
    scores = [mask.score for mask in answer.masks]
    if scores != sorted(scores, reverse=True):
        return f"masks not best first: {scores}"
    for mask in answer.masks:
        if body["format"] == "png":
            if mask.png is None or mask.segmentation is not None:
                return "format=png answered without a PNG (or with an RLE too)"
            pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(mask.png))))
            if pixels.shape != (h, w) or int((pixels > 0).sum()) != mask.area:
                return f"PNG mask {pixels.shape} with {int((pixels > 0).sum())} pixels, answer says {mask.area} on {(h, w)}"
        elif mask.segmentation is None or (problem := _check_mask(mask.segmentation.model_dump(), mask.area, h, w)):
            return problem or "format=coco_rle answered without an RLE"
        logits_bytes = 4 * low_res_side**2
        if body["return_logits"] != (mask.low_res_logits is not None) or (
            mask.low_res_logits is not None and len(base64.b64decode(mask.low_res_logits)) != logits_bytes
        ):
            return f"low_res_logits wrong for return_logits={body['return_logits']} (expected {logits_bytes} bytes)"
    return None


def _check_everything(answer: EverythingResponse, image_id: str, h: int, w: int) -> str | None:
    if (answer.image_id, answer.height, answer.width) != (image_id, h, w):
        return f"answer for {answer.image_id} {answer.height}x{answer.width}, asked {image_id} {h}x{w}"
    for mask in answer.masks:
        if problem := _check_mask(mask.segmentation.model_dump(), mask.area, h, w):
            return problem
        if mask.crop_box != [0, 0, w, h]:
            return f"crop_box {mask.crop_box} without crop layers, image {w}x{h}"
    return None


@dataclasses.dataclass(frozen=True)
class Memory:
    """What the process holds, in MiB: resident pages, and the bytes malloc has handed out and not had back."""

    rss: float
    allocated: float | None  # None off glibc


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")
    ]


def _glibc() -> Any:
    name = ctypes.util.find_library("c")
    libc = None if name is None else ctypes.CDLL(name)
    if libc is None or not hasattr(libc, "malloc_trim") or not hasattr(libc, "mallinfo2"):
        return None  # musl, or glibc before 2.33
    libc.mallinfo2.restype = _MallInfo2
    return libc


def rss_mib() -> float:
    """VmRSS of this process in MiB, as it stands."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024  # kB
    raise RuntimeError("no VmRSS in /proc/self/status")


def measure_memory() -> Memory:
    """RSS after a garbage collection and `malloc_trim(0)`, and what malloc has allocated (all arenas).

    glibc keeps freed memory in its arenas (one per thread that allocated, up to 8 per core)
    and gives back on its own only the top of each heap: after a load that interleaved big
    transient blocks (an everything's masks) with long-lived ones (cached pixels), tens of MiB
    of free pages can stay resident and RSS would measure the allocator's history, not what
    the service holds. `malloc_trim(0)` returns every free page, so the RSS compared is what is
    still in use plus the free fragments smaller than a page. It is called here only, never in
    the service. `mallinfo2` adds what the RSS cannot tell apart: the bytes still allocated
    (in use in the arenas plus mmapped blocks), which a leak grows and fragmentation does not.
    """
    gc.collect()
    libc = _glibc()
    if libc is None:
        return Memory(rss_mib(), None)
    libc.malloc_trim(0)
    info = libc.mallinfo2()
    return Memory(rss_mib(), (info.uordblks + info.hblkhd) / MIB)


class ErrorLog(logging.Handler):
    """Keeps every record at ERROR or above (an exception in a route is logged so, whatever the client got)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """`app` under uvicorn in a thread on 127.0.0.1 (a free port); yields its URL and stops it after."""
    # IPPROTO_TCP named, as `mobilesam serve`'s own sockets have it: asyncio sets TCP_NODELAY only
    # on those, and without it each answer (headers, then body) waits ~40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    # log_config=None: uvicorn's loggers propagate to the root logger, where the test listens.
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        sock.close()


@functools.cache
def build_model() -> Any:
    """vit_t at image size 256 with seeded random weights: every code path, a sixteenth of the pixels."""
    from mobilesam.registry import build_from_config, get_config
    from reference import randomize

    return randomize(build_from_config(dataclasses.replace(get_config("vit_t"), image_size=256)), seed=11)


def drain(url: str, upload: Upload) -> None:
    """Wait until both lanes of the model have finished what was queued (hung-up requests' work included).

    Each lane is one FIFO thread, so a job sent now finishes after everything before it.
    """
    with httpx.Client(base_url=url, timeout=120) as client:
        client.send(_upload_request(client, upload)).raise_for_status()
        for route, body in (("segment", {"points": [[1, 1]]}), ("everything", {"points_per_side": 1})):
            client.post(f"/v1/images/{upload.image_id}/{route}", json=body).raise_for_status()


def cache_bytes(url: str) -> int:
    with httpx.Client(base_url=url, timeout=60) as client:
        return client.get("/healthz").raise_for_status().json()["cache_bytes"]


@pytest.mark.slow
def test_under_load_answers_stay_right_and_memory_stays_bounded():
    uploads = make_uploads()
    errors = ErrorLog()
    logging.getLogger().addHandler(errors)
    app = create_app(build_model(), SETTINGS)
    try:
        with serve(app) as url:
            mix = Mix(url, uploads, seed=0)
            warm = mix.one_of_each()
            assert [a.problem for a in warm if a.problem] == []
            # Then a short load of another seed: every client thread, server thread, arena and the engines'
            # per-shape kernels exist before the baseline, so the RSS compared is what the load itself keeps.
            warm = Mix(url, uploads, seed=1).run(CLIENTS, WARM_UP_REQUESTS)
            assert [a.problem for a in warm if a.problem] == []
            drain(url, uploads[0])
            cache_before, before = cache_bytes(url), measure_memory()

            started = time.perf_counter()
            answers = mix.run(CLIENTS, REQUESTS)
            elapsed = time.perf_counter() - started
            # A request whose client hung up may still be on a lane: wait it out before measuring.
            drain(url, uploads[0])
            with httpx.Client(base_url=url, timeout=60) as client:
                health = client.get("/healthz")
            assert health.status_code == 200, health.text
            after = measure_memory()
    finally:
        logging.getLogger().removeHandler(errors)

    assert len(answers) == CLIENTS * REQUESTS
    problems = [f"{a.kind} -> {a.status}: {a.problem}" for a in answers if a.problem]
    assert problems == [], f"{len(problems)} wrong answers, first: {problems[:5]}"
    assert {a.kind for a in answers} == set(KINDS), "the mix should send every kind of request"
    assert sum(a.status == 200 for a in answers if a.kind == "click") > 20, "too few clicks reached the model"
    assert [errors.format(record) for record in errors.records] == []

    stats = health.json()
    assert stats["cache_bytes"] <= stats["cache_max_bytes"] == CACHE_BYTES
    # Failed embeddings are not cached and none failed, so what was computed and is not kept was evicted.
    assert stats["embeddings_computed"] - stats["cache_entries"] >= 10, f"the load should cycle the cache: {stats}"
    cache_growth = (stats["cache_bytes"] - cache_before) / MIB
    print(
        f"{len(answers)} requests in {elapsed:.1f} s; cache +{cache_growth:.1f} MiB; RSS {before.rss:.0f} -> {after.rss:.0f} MiB "
        f"(+{after.rss - before.rss:.1f}, bound {CACHE_BYTES / MIB + RSS_MARGIN_MIB:.0f}); allocated "
        + (
            "n/a"
            if before.allocated is None
            else f"{before.allocated:.0f} -> {after.allocated:.0f} MiB ({after.allocated - before.allocated:+.1f})"
        )
    )
    assert after.rss - before.rss <= CACHE_BYTES / MIB + RSS_MARGIN_MIB, (
        f"RSS grew {after.rss - before.rss:.1f} MiB under load: more than the cache's limit "
        f"{CACHE_BYTES / MIB:.0f} MiB + {RSS_MARGIN_MIB} MiB"
    )
    if before.allocated is not None:
        allocated_growth = after.allocated - before.allocated
        assert allocated_growth <= cache_growth + ALLOCATED_MARGIN_MIB, (
            f"malloc holds {allocated_growth:.1f} MiB more after the load, the cache only {cache_growth:.1f} MiB more: a leak"
        )


def test_an_upload_cut_short_is_answered_400_not_raised():
    """A client that hangs up mid-upload got an exception out of the app (uvicorn logged a 500 for it);
    now it gets the 400 that FastAPI answers a JSON body cut short with."""
    app = create_app(build_model(), SETTINGS)
    body = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\nContent-Type: image/png\r\n\r\n'
    body += bytes(1000) + b"\r\n--b--\r\n"
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/images",
        "raw_path": b"/v1/images",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"test"),
            (b"content-type", b"multipart/form-data; boundary=b"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
    }
    messages = [{"type": "http.request", "body": body[: len(body) // 2], "more_body": True}, {"type": "http.disconnect"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    try:
        asyncio.run(app(scope, receive, send))
    finally:
        app.state.service.close()
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 400
    assert json.loads(b"".join(m.get("body", b"") for m in sent[1:]))["detail"].startswith("the client hung up")


def test_an_upload_that_is_not_json_is_answered_400_as_on_the_other_routes():
    """Malformed JSON was a 400 on /segment and /everything but a 422 on /v1/images; now a 400 everywhere."""
    from fastapi.testclient import TestClient

    client = TestClient(create_app(build_model(), SETTINGS))  # no `with`: no lifespan, closed below
    try:
        malformed = client.post("/v1/images", content=b'{"image": "iVBO', headers={"content-type": "application/json"})
        wrong_shape = client.post("/v1/images", json={"picture": "iVBO"})
    finally:
        client.app.state.service.close()
    assert malformed.status_code == 400 and malformed.json()["detail"].startswith("the body is not valid JSON")
    assert wrong_shape.status_code == 422  # JSON, but not the schema's
