"""`segment_anything.utils.amg`'s public functions, under its names, from `mobilesam.masks`.

`mask_to_rle_pytorch` is `mobilesam.masks.mask_to_rle`. segment_anything's
`MaskData` container and `batch_iterator` have no twin here: our generator
keeps its candidates in its own container (`mobilesam.automatic`).
"""

from ..masks import (
    area_from_rle,
    batched_mask_to_box,
    box_xyxy_to_xywh,
    build_all_layer_point_grids,
    build_point_grid,
    calculate_stability_score,
    coco_encode_rle,
    generate_crop_boxes,
    is_box_near_crop_edge,
    remove_small_regions,
    rle_to_mask,
    uncrop_boxes_xyxy,
    uncrop_masks,
    uncrop_points,
)
from ..masks import mask_to_rle as mask_to_rle_pytorch

__all__ = [
    "area_from_rle",
    "batched_mask_to_box",
    "box_xyxy_to_xywh",
    "build_all_layer_point_grids",
    "build_point_grid",
    "calculate_stability_score",
    "coco_encode_rle",
    "generate_crop_boxes",
    "is_box_near_crop_edge",
    "mask_to_rle_pytorch",
    "remove_small_regions",
    "rle_to_mask",
    "uncrop_boxes_xyxy",
    "uncrop_masks",
    "uncrop_points",
]
