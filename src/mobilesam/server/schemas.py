"""Request and response bodies of the service (they make its OpenAPI document)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..automatic import GENERATOR_DEFAULTS as _DEFAULTS


class ErrorBody(BaseModel):
    """Every error answer: one line saying what was wrong and what to do."""

    detail: str = Field(description="What was wrong with the request, or why the service cannot answer it now.")


class ImageUpload(BaseModel):
    """An image sent as JSON instead of a multipart upload."""

    # Strict: the schema says integer or boolean, so false is no 0 and "1" no 1.
    model_config = ConfigDict(extra="forbid", strict=True)

    image: str = Field(
        description="The image file (PNG, JPEG, WebP, BMP, TIFF, GIF), base64-encoded; a data: URL prefix is allowed."
    )
    content_type: str = Field("image/png", description="MIME type of the file; must be an image/* type.")


class ImageInfo(BaseModel):
    """An uploaded image whose embedding is cached."""

    image_id: str = Field(description="Hash of the decoded pixels; the same image always gets the same id.")
    width: int
    height: int
    cached: bool = Field(description="True when the embedding was already cached (or being computed) and not computed again.")
    milliseconds: float = Field(description="Time spent on this request in the service.")


class SegmentRequest(BaseModel):
    """Prompts for one object, in pixels of the original image (XY)."""

    # Strict: the schema says integer or boolean, so false is no 0 and "1" no 1.
    model_config = ConfigDict(extra="forbid", strict=True)

    points: list[list[float]] | None = Field(None, description="(N, 2) XY points.", examples=[[[120, 80]]])
    labels: list[float] | None = Field(None, description="(N,) 1 foreground, 0 background; default all 1.", examples=[[1]])
    box: list[float] | None = Field(None, description="[x1, y1, x2, y2].")
    mask_input: str | list[list[float]] | None = Field(
        None,
        description="Low-res logits from a previous answer (`low_res_logits`): base64 of 256x256 little-endian float32, or nested lists.",
    )
    multimask: bool = Field(False, description="Three candidate masks (for an ambiguous single click) instead of one.")
    format: Literal["coco_rle", "png"] = Field(
        "coco_rle", description="Mask encoding: COCO compressed RLE, or base64 PNG (0/255)."
    )
    return_logits: bool = Field(False, description="Also return each mask's 256x256 low-res logits, to send back as mask_input.")


class CocoRle(BaseModel):
    """COCO compressed RLE (pycocotools' `counts` string; column-major)."""

    size: list[int] = Field(description="[height, width].")
    counts: str


class SegmentMask(BaseModel):
    """One predicted mask."""

    score: float = Field(description="Predicted IoU.")
    area: int = Field(description="Pixels in the mask.")
    bbox: list[float] = Field(description="[x, y, width, height] around the mask (COCO).")
    segmentation: CocoRle | None = Field(None, description="With format=coco_rle.")
    png: str | None = Field(None, description="With format=png: base64 of a grayscale PNG, 255 inside the mask.")
    low_res_logits: str | None = Field(None, description="With return_logits: base64 of 256x256 little-endian float32.")


class SegmentResponse(BaseModel):
    """Masks for one object, best score first."""

    image_id: str
    width: int
    height: int
    masks: list[SegmentMask]
    milliseconds: float


class EverythingRequest(BaseModel):
    """Options of the automatic mask generator (`SamAutomaticMaskGenerator`)."""

    # Strict: the schema says integer or boolean, so false is no 0 and "1" no 1.
    model_config = ConfigDict(extra="forbid", strict=True)

    points_per_side: int = Field(_DEFAULTS.points_per_side, ge=1, le=128, description="Grid of points per image side.")
    points_per_batch: int = Field(_DEFAULTS.points_per_batch, ge=1, le=1024)
    pred_iou_thresh: float = Field(_DEFAULTS.pred_iou_thresh, description="Keep masks with predicted IoU above this.")
    stability_score_thresh: float = Field(_DEFAULTS.stability_score_thresh, description="Keep masks at least this stable.")
    stability_score_offset: float = _DEFAULTS.stability_score_offset
    box_nms_thresh: float = Field(_DEFAULTS.box_nms_thresh, description="Box IoU above which the weaker of two masks is dropped.")
    crop_n_layers: int = Field(
        _DEFAULTS.crop_n_layers, ge=0, le=3, description="Extra layers of crops (finds small objects, slower)."
    )
    crop_nms_thresh: float = _DEFAULTS.crop_nms_thresh
    crop_overlap_ratio: float = _DEFAULTS.crop_overlap_ratio
    crop_n_points_downscale_factor: int = _DEFAULTS.crop_n_points_downscale_factor
    min_mask_region_area: int = Field(
        _DEFAULTS.min_mask_region_area, description="Remove holes and islands smaller than this (pixels)."
    )


class EverythingMask(BaseModel):
    """One mask of the automatic generator."""

    segmentation: CocoRle
    area: int
    bbox: list[float] = Field(description="[x, y, width, height].")
    predicted_iou: float
    stability_score: float
    point_coords: list[list[float]] = Field(description="The grid point that prompted it, [[x, y]].")
    crop_box: list[float] = Field(description="[x, y, width, height] of the crop it came from.")


class EverythingResponse(BaseModel):
    """All masks the generator kept."""

    image_id: str
    width: int
    height: int
    masks: list[EverythingMask]
    milliseconds: float


class ModelInfo(BaseModel):
    """The model this service runs."""

    name: str
    checkpoint: str
    parameters: int
    device: str
    image_size: int = Field(description="Long side of the model input.")


class ModelList(BaseModel):
    models: list[ModelInfo]


class Health(BaseModel):
    """Liveness, with the cache and queue state."""

    status: Literal["ok"]
    model: str
    backend: str = Field(description="What embeds and decodes (`mobilesam.backends`), as `serve --backend auto` picked it.")
    precision: Literal["fp32", "bf16", "int8"] = Field(description="What the backend's image encoder computes in.")
    cache_entries: int
    cache_bytes: int
    cache_max_bytes: int
    cache_hits: int
    embeddings_computed: int
    queue_waiting: int
    queue_size: int
    everything_waiting: int = Field(
        description="Segment-everything requests waiting on their own lane (clicks never wait for them)."
    )
    in_page_decoding: bool = Field(
        description="The page decodes clicks in the browser (GET /v1/decoder.onnx and /v1/images/{image_id}/embedding); "
        "false when the service runs with --no-in-page-decoding or the decoder graph could not be exported."
    )


class LabelStudioSetup(BaseModel):
    """Label Studio's `/setup` call, made when a project connects to the service as its model."""

    # Label Studio's requests carry more fields than are read here; strict, as the other requests, for those that are.
    model_config = ConfigDict(extra="ignore", strict=True)

    project: str | None = Field(None, description="'<project id>.<created at>'.")
    schema_: str | None = Field(None, alias="schema", description="The project's labeling config (XML).")


class LabelStudioSetupResponse(BaseModel):
    """What Label Studio records as the model version of the predictions."""

    model_version: str


class LabelStudioHealth(BaseModel):
    """Label Studio's health check: `status` "UP" means connected."""

    status: Literal["UP"]
    model_class: str
    model_version: str


class LabelStudioRegion(BaseModel):
    """One region of the interactive context: a keypoint or a rectangle, in percent of the image."""

    model_config = ConfigDict(extra="ignore", strict=True)

    type: str = Field(description="keypointlabels, keypoint, rectanglelabels or rectangle.")
    value: dict[str, Any] = Field(description="x, y (and width, height for a rectangle) in percent, and the labels.")
    is_positive: bool = Field(True, description="False for a negative keypoint (Alt-click): not this object.")
    original_width: int | None = None
    original_height: int | None = None
    image_rotation: float = 0.0


class LabelStudioContext(BaseModel):
    """The regions an annotator placed with the smart tools."""

    model_config = ConfigDict(extra="ignore", strict=True)

    result: list[LabelStudioRegion] = Field(default_factory=list)


class LabelStudioParams(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    context: LabelStudioContext | None = None


class LabelStudioTask(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    id: int | None = None
    data: dict[str, Any]


class LabelStudioPredictRequest(BaseModel):
    """Label Studio's `/predict` call: tasks, the labeling config and, when interactive, the context."""

    model_config = ConfigDict(extra="ignore", strict=True)

    tasks: list[LabelStudioTask]
    label_config: str | None = None
    project: str | None = None
    params: LabelStudioParams | None = None


class LabelStudioBrushValue(BaseModel):
    format: Literal["rle"] = "rle"
    rle: list[int] = Field(description="Label Studio's brush RLE of the RGBA mask (its `decode_rle`).")
    brushlabels: list[str]


class LabelStudioBrush(BaseModel):
    """One object's mask as a BrushLabels region."""

    id: str
    from_name: str
    to_name: str
    original_width: int
    original_height: int
    image_rotation: int = 0
    value: LabelStudioBrushValue
    score: float = Field(description="Predicted IoU.")
    type: Literal["brushlabels"] = "brushlabels"
    readonly: bool = False


class LabelStudioPrediction(BaseModel):
    result: list[LabelStudioBrush]
    model_version: str
    score: float = Field(description="Mean predicted IoU of the regions.")


class LabelStudioPredictResponse(BaseModel):
    """One prediction for the interactive task; none without a context."""

    results: list[LabelStudioPrediction]
