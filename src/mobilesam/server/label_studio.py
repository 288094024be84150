"""Label Studio's ML backend protocol: the service as a project's model, for interactive brush masks.

Label Studio calls `/health` and `/setup` when a project connects, and
`/predict` with the task and the annotator's smart-tool regions (the
"context") on each click. Keypoints (positive, or negative with Alt) and
rectangles, in percent of the image, become `Prompt`s: every rectangle is
one object, refined by the keypoints inside it (all keypoints, when there
is one rectangle); keypoints alone are one object. Each object comes back
as a `BrushLabels` region in Label Studio's brush RLE.

The task's image is read once per image: its bytes go through the service's
upload (pixel limit, embedding cache), so clicks on one image embed it once.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import os
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

import numpy as np

from ..predictor import SamPredictor
from ..prompts import Prompt, check_prompt
from ..results import Results
from ..segment import segment_prompts
from .brush_rle import encode_brush_rle
from .errors import ImageNotFound, InvalidRequest, PayloadTooLarge, ServiceBusy
from .schemas import (
    LabelStudioBrush,
    LabelStudioBrushValue,
    LabelStudioHealth,
    LabelStudioPrediction,
    LabelStudioPredictRequest,
    LabelStudioPredictResponse,
    LabelStudioRegion,
    LabelStudioSetup,
    LabelStudioSetupResponse,
    LabelStudioTask,
)
from .service import CachedImage, SegmentationService
from .worker import WorkerBusy

logger = logging.getLogger(__name__)

_POINT_TYPES = ("keypointlabels", "keypoint")
_BOX_TYPES = ("rectanglelabels", "rectangle")
_FETCH_TIMEOUT_S = 30
_LOCAL_FILES = "/data/local-files/"


@dataclass(frozen=True)
class LabelStudioOptions:
    """Where the images of Label Studio's tasks are read from.

    Args:
        url: Label Studio's address ("http://localhost:8080"), for task images it
            serves itself (`/data/upload/...`, cloud storage's `/tasks/.../resolve/...`).
        api_key: Its access token (Account & Settings), sent as `Authorization: Token <key>`
            with requests to `url`.
        files_root: Folder that task images given as paths, and Label Studio's local
            storage (`/data/local-files/?d=...`), are read from; none are read without it.
    """

    url: str | None = None
    api_key: str | None = None
    files_root: Path | None = None

    def __post_init__(self) -> None:
        if self.url is not None and not self.url.startswith(("http://", "https://")):
            raise ValueError(f"the Label Studio URL must start with http:// or https://, got {self.url!r}")


@dataclass(frozen=True)
class BrushTarget:
    """Where a labeling config wants brush masks: the BrushLabels tag, its image tag and the task data key."""

    from_name: str
    to_name: str
    data_key: str


@dataclass(frozen=True)
class LabeledObject:
    """One object to segment: its checked prompt and the label of the region that made it."""

    prompt: Prompt
    label: str | None


class LabelStudioBackend:
    """The ML backend routes' work, on a `SegmentationService` (its cache, worker and limits).

    Args:
        service: The service whose model, cache and queue the predictions use.
        options: Where task images are read from.
    """

    def __init__(self, service: SegmentationService, options: LabelStudioOptions | None = None) -> None:
        self.service = service
        self.options = options or LabelStudioOptions()

    @property
    def model_version(self) -> str:
        """The version Label Studio records on the predictions: the model and its engine."""
        return f"mobilesam-{self.service.settings.model_name}-{self.service.backend.name}"

    def health(self) -> LabelStudioHealth:
        """Up, with the model version."""
        return LabelStudioHealth(status="UP", model_class="mobilesam", model_version=self.model_version)

    def setup(self, request: LabelStudioSetup) -> LabelStudioSetupResponse:
        """Accept a project whose labeling config has a BrushLabels tag on an image.

        Raises:
            InvalidRequest: The config is missing, or has nothing to put brush masks on.
        """
        brush_target(request.schema_)
        return LabelStudioSetupResponse(model_version=self.model_version)

    async def predict(self, request: LabelStudioPredictRequest) -> LabelStudioPredictResponse:
        """Brush masks for the annotator's keypoints and rectangles; no prediction without them.

        Raises:
            InvalidRequest: A config, task, region or image reference that cannot be used.
            PayloadTooLarge: The image file or its pixels are over the service's limits.
            UnsupportedMedia: The task's image is not a readable image.
            ServiceBusy: The work queue is full.
        """
        context = request.params.context if request.params is not None else None
        if context is None or not context.result:
            return LabelStudioPredictResponse(results=[])  # not interactive: nothing to predict from
        if len(request.tasks) != 1:
            raise InvalidRequest(f"an interactive prediction is for one task, got {len(request.tasks)}")
        target = brush_target(request.label_config)
        image = await self._image(request.tasks[0], target)
        height, width = image.original_size
        objects = context_objects(context.result, (height, width), self.service.model.prompt_encoder.mask_input_size)
        logger.debug("label studio task %s: %d objects on a %dx%d image", request.tasks[0].id, len(objects), width, height)
        # One ambiguous click: three candidates, of which the best is kept (SAM's advice for single points).
        multimask = len(objects) == 1 and objects[0].prompt.box is None and len(objects[0].prompt.point_coords) == 1
        results = await self._segment(image, [item.prompt for item in objects], multimask)
        regions = []
        per_object = 3 if multimask else 1
        masks, scores = np.asarray(results.masks), results.scores
        for index, item in enumerate(objects):
            best = index * per_object + int(np.argmax(scores[index * per_object : (index + 1) * per_object]))
            regions.append(
                LabelStudioBrush(
                    id=uuid.uuid4().hex[:10],
                    from_name=target.from_name,
                    to_name=target.to_name,
                    original_width=width,
                    original_height=height,
                    value=LabelStudioBrushValue(
                        rle=encode_brush_rle(masks[best]), brushlabels=[item.label] if item.label else []
                    ),
                    score=float(scores[best]),
                )
            )
        score = float(np.mean([region.score for region in regions]))
        return LabelStudioPredictResponse(
            results=[LabelStudioPrediction(result=regions, model_version=self.model_version, score=score)]
        )

    async def _image(self, task: LabelStudioTask, target: BrushTarget) -> CachedImage:
        """The task's image, embedded once through the service's upload."""
        reference = task.data.get(target.data_key)
        if not isinstance(reference, str) or not reference:
            raise InvalidRequest(
                f"task {task.id} has no image in data[{target.data_key!r}] "
                f'(the labeling config\'s <Image name={target.to_name!r} value="${target.data_key}">)'
            )
        data = await asyncio.to_thread(read_image_reference, reference, self.options, self.service.settings.max_upload_bytes)
        info = await self.service.upload(data, "")
        try:
            return self.service.image(info.image_id)
        except ImageNotFound as err:
            raise InvalidRequest(
                f"the embedding of {reference} does not fit the cache: give the service more (--cache-mb)"
            ) from err

    async def _segment(self, image: CachedImage, prompts: list[Prompt], multimask: bool) -> Results:
        try:
            future = self.service.worker.submit(self._decode, image, prompts, multimask)
        except WorkerBusy as err:
            raise ServiceBusy(str(err), self.service.settings.retry_after_s) from err
        try:
            # shield: a client that goes away must not cancel the worker's job mid-decode.
            return await asyncio.shield(asyncio.wrap_future(future))
        except ValueError as err:
            raise InvalidRequest(str(err)) from err

    def _decode(self, image: CachedImage, prompts: list[Prompt], multimask: bool) -> Results:
        """Decode the objects on the cached embedding (runs on the worker)."""
        predictor = SamPredictor(self.service.model, self.service.backend)
        return segment_prompts(predictor, image.embedding, prompts, image.pixels, multimask_output=multimask)


def brush_target(label_config: str | None) -> BrushTarget:
    """The first BrushLabels tag of a labeling config, the image tag it labels, and that image's data key.

    Raises:
        InvalidRequest: No config, not XML, no BrushLabels tag, or it does not label an image with a `$key` value.
    """
    if not label_config:
        raise InvalidRequest("the request has no labeling config (label_config, or schema for /setup)")
    try:
        root = ElementTree.fromstring(label_config)
    except ElementTree.ParseError as err:
        raise InvalidRequest(f"the labeling config is not valid XML: {err}") from err
    tags = list(root.iter())
    brush = next((tag for tag in tags if tag.tag.lower() == "brushlabels"), None)
    if brush is None or not brush.get("name") or not brush.get("toName"):
        raise InvalidRequest(
            "the labeling config needs a <BrushLabels name=... toName=...> tag: mobilesam answers with brush masks"
        )
    to_name = brush.get("toName", "")
    image = next((tag for tag in tags if tag.tag.lower() == "image" and tag.get("name") == to_name), None)
    value = "" if image is None else image.get("value", "")
    if not value.startswith("$") or len(value) < 2:
        raise InvalidRequest(f'the BrushLabels tag labels {to_name!r}, which must be an <Image name="{to_name}" value="$key">')
    return BrushTarget(brush.get("name", ""), to_name, value[1:])


def context_objects(
    regions: list[LabelStudioRegion], image_hw: tuple[int, int], mask_input_size: tuple[int, int]
) -> list[LabeledObject]:
    """The objects the annotator's regions prompt, each checked against the image.

    Every rectangle is an object; keypoints refine the rectangles they lie in
    (all rectangles' when there is one); keypoints without rectangles are one object.

    Args:
        regions: The context's keypoints and rectangles, in percent of the image.
        image_hw: (H, W) of the task's image.
        mask_input_size: (h, w) of the model's low-res masks.

    Raises:
        InvalidRequest: A region of another type, a rotation, a size that is not the image's,
            a keypoint in none of several rectangles, or a prompt outside the image.
    """
    height, width = image_hw
    points: list[tuple[np.ndarray, int, str | None]] = []  # (XY pixels, label, region label)
    boxes: list[tuple[np.ndarray, str | None]] = []  # (XYXY pixels, region label)
    for index, region in enumerate(regions):
        where = f"context.result[{index}]"
        _check_frame(region, where, image_hw)
        kind = region.type.lower()
        if kind in _POINT_TYPES:
            x, y = _percent(region, where, "x") * width / 100, _percent(region, where, "y") * height / 100
            points.append((np.array([x, y]), int(region.is_positive), _region_label(region, kind)))
        elif kind in _BOX_TYPES:
            if float(region.value.get("rotation") or 0) != 0:
                raise InvalidRequest(f"{where}: rotated rectangles are not supported; draw the rectangle unrotated")
            x, y = _percent(region, where, "x") * width / 100, _percent(region, where, "y") * height / 100
            w, h = _percent(region, where, "width") * width / 100, _percent(region, where, "height") * height / 100
            boxes.append((np.array([x, y, x + w, y + h]), _region_label(region, kind)))
        else:
            raise InvalidRequest(
                f"{where}: a {region.type!r} region is no prompt; use KeyPointLabels or RectangleLabels (smart tools)"
            )
    if not boxes:
        members = [(points, points[-1][2])]
    else:
        members = [([p for p in points if len(boxes) == 1 or _inside(p[0], box)], label) for box, label in boxes]
        for xy, _, _ in points:
            if len(boxes) > 1 and not any(_inside(xy, box) for box, _ in boxes):
                raise InvalidRequest(
                    f"the keypoint at ({xy[0]:.1f}, {xy[1]:.1f}) px lies in none of the {len(boxes)} rectangles: "
                    "with several rectangles each keypoint refines the rectangle it lies in"
                )
    objects = []
    for (object_points, label), box in zip(members, [b for b, _ in boxes] or [None]):
        coords = np.array([p[0] for p in object_points]) if object_points else None
        labels = [p[1] for p in object_points] if object_points else None
        try:
            prompt = check_prompt(image_hw, mask_input_size, coords, labels, box)
        except ValueError as err:
            raise InvalidRequest(f"context: {err}") from err
        objects.append(LabeledObject(prompt, label))
    return objects


def read_image_reference(reference: str, options: LabelStudioOptions, max_bytes: int) -> bytes:
    """The image file a task's data names: an http(s) URL, a Label Studio path, a data: URL, or a local path.

    Raises:
        InvalidRequest: The reference cannot be read here (the message says which option is missing),
            or the fetch failed.
        PayloadTooLarge: The file has more than `max_bytes` bytes.
    """
    if reference.startswith("data:"):
        return _data_url(reference)
    if reference.startswith(_LOCAL_FILES):
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(reference).query)
        if "d" not in query:
            raise InvalidRequest(f"the local-files URL {reference!r} has no ?d=<path>")
        return _read_local(query["d"][0], reference, options, max_bytes)
    if reference.startswith(("http://", "https://")):
        ours = options.url is not None and reference.startswith(options.url.rstrip("/") + "/")
        return _fetch(reference, options.api_key if ours else None, max_bytes)
    if reference.startswith("/data/") or reference.startswith("/tasks/"):
        if options.url is None:
            raise InvalidRequest(
                f"the task image {reference!r} is served by Label Studio: start the service with "
                "--label-studio-url (and --label-studio-api-key) to read it"
            )
        return _fetch(urllib.parse.urljoin(options.url.rstrip("/") + "/", reference.lstrip("/")), options.api_key, max_bytes)
    if "://" in reference:
        raise InvalidRequest(f"the task image {reference!r} has a scheme mobilesam does not read: use http(s) URLs")
    return _read_local(reference, reference, options, max_bytes)


def basic_auth_password(authorization: str | None) -> str | None:
    """The password of an HTTP Basic `Authorization` header (how Label Studio authenticates to ML backends)."""
    scheme, _, encoded = (authorization or "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, ValueError):
        return None
    return decoded.partition(":")[2]


def _check_frame(region: LabelStudioRegion, where: str, image_hw: tuple[int, int]) -> None:
    """Refuse a region drawn on a rotated image, or on an image of another size than the task's."""
    if region.image_rotation:
        raise InvalidRequest(f"{where}: the image is rotated in the editor ({region.image_rotation:g} degrees); rotate it back")
    size = (region.original_height, region.original_width)
    if None not in size and size != image_hw:
        raise InvalidRequest(
            f"{where}: the region is on a {size[1]}x{size[0]} image, but the task's image is {image_hw[1]}x{image_hw[0]}"
        )


def _percent(region: LabelStudioRegion, where: str, key: str) -> float:
    value = region.value.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        raise InvalidRequest(f"{where}.value.{key} must be a number (percent of the image), got {value!r}")
    return float(value)


def _region_label(region: LabelStudioRegion, kind: str) -> str | None:
    labels = region.value.get(kind) or region.value.get("labels")
    return str(labels[0]) if isinstance(labels, list) and labels else None


def _inside(xy: np.ndarray, box: np.ndarray) -> bool:
    return bool(box[0] <= xy[0] <= box[2] and box[1] <= xy[1] <= box[3])


def _data_url(reference: str) -> bytes:
    header, _, payload = reference.partition(",")
    if not header.endswith(";base64"):
        raise InvalidRequest("a data: URL image must be base64 (data:image/png;base64,...)")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as err:
        raise InvalidRequest(f"the data: URL image is not valid base64: {err}") from err


def _read_local(path: str, reference: str, options: LabelStudioOptions, max_bytes: int) -> bytes:
    """A file under `options.files_root`; paths that leave it are refused."""
    if options.files_root is None:
        raise InvalidRequest(
            f"the task image {reference!r} is a local path: start the service with --label-studio-files DIR "
            "to read images under DIR"
        )
    root = options.files_root.resolve()
    file = (root / path.lstrip("/")).resolve()
    if not file.is_relative_to(root):
        raise InvalidRequest(f"the task image {reference!r} lies outside the Label Studio files folder")
    if not file.is_file():
        raise InvalidRequest(f"the task image {reference!r} is not a file under the Label Studio files folder")
    if os.path.getsize(file) > max_bytes:
        raise PayloadTooLarge(f"the image file has {os.path.getsize(file):,} bytes; the limit is {max_bytes:,}")
    return file.read_bytes()


def _fetch(url: str, api_key: str | None, max_bytes: int) -> bytes:
    """The body at `url`, with Label Studio's token when it is Label Studio's, at most `max_bytes`."""
    headers = {"Authorization": f"Token {api_key}"} if api_key else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=_FETCH_TIMEOUT_S) as response:
            data = response.read(max_bytes + 1)
    except urllib.error.HTTPError as err:
        raise InvalidRequest(f"cannot fetch the task image {url}: HTTP {err.code} {err.reason}") from err
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise InvalidRequest(f"cannot fetch the task image {url}: {err}") from err
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"the image at {url} has more than {max_bytes:,} bytes, the limit")
    return data
