"""Dataset readers for validation: COCO, SA-1B and PNG masks read back to the masks written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from mobilesam.io.datasets import DatasetError, load_dataset
from mobilesam.masks import mask_to_rle

H, W = 48, 64


def _random_masks(count: int, seed: int) -> list[np.ndarray]:
    """Blobs of different sizes: (H, W) bool each, none empty."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W]
    masks = []
    for _ in range(count):
        cy, cx, ry, rx = rng.uniform(0, H), rng.uniform(0, W), rng.uniform(3, 20), rng.uniform(3, 20)
        mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
        mask[int(cy) % H, int(cx) % W] = True
        masks.append(mask)
    return masks


def _compressed(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def _write_json(path: Path, document: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document))
    return path


def test_coco_polygons_and_rle_read_back_as_pycocotools_draws_them(tmp_path):
    masks = _random_masks(4, seed=0)
    annotations = [
        {"id": 10, "image_id": 2, "category_id": 3, "segmentation": _compressed(masks[0]), "iscrowd": 0},
        {
            "id": 11,
            "image_id": 2,
            "category_id": 5,
            "segmentation": mask_to_rle(torch.from_numpy(masks[1])[None])[0],
            "iscrowd": 0,
        },
        # Two polygon parts make one instance.
        {"id": 12, "image_id": 1, "category_id": 3, "segmentation": [[2, 2, 20, 2, 20, 15, 2, 15], [30, 30, 50, 30, 40, 45]]},
        {"id": 13, "image_id": 1, "category_id": 5, "segmentation": _compressed(masks[2]), "iscrowd": 1},
        {"id": 14, "image_id": 3, "category_id": 3, "segmentation": _compressed(masks[3]), "iscrowd": 1},
    ]
    document = {
        "images": [
            {"id": 2, "file_name": "b/two.jpg", "height": H, "width": W},
            {"id": 1, "file_name": "one.png", "height": H, "width": W},
            {"id": 3, "file_name": "crowd_only.png", "height": H, "width": W},
            {"id": 4, "file_name": "unannotated.png", "height": H, "width": W},
        ],
        "annotations": annotations,
        "categories": [{"id": 3, "name": "cat"}, {"id": 5, "name": "dog"}],
    }
    path = _write_json(tmp_path / "annotations" / "instances.json", document)
    images = tmp_path / "images"
    images.mkdir()

    dataset = load_dataset(path, images)
    assert dataset.kind == "coco" and dataset.skipped_crowd == 2 and dataset.num_instances == 3
    assert [entry.path for entry in dataset] == [images / "b" / "two.jpg", images / "one.png"]
    assert dataset.categories == {3: "cat", 5: "dog"}
    two, one = dataset.images
    assert [(i.instance_id, i.category_id, i.category_name) for i in two.instances] == [(10, 3, "cat"), (11, 5, "dog")]
    np.testing.assert_array_equal(two.instances[0].mask(), masks[0])
    np.testing.assert_array_equal(two.instances[1].mask(), masks[1])
    coco = COCO(str(path))
    [polygon] = one.instances
    expected = coco.annToMask(coco.anns[12]).astype(bool)
    np.testing.assert_array_equal(polygon.mask(), expected)
    assert polygon.mask()[5, 5] and polygon.mask()[35, 40] and not polygon.mask()[25, 25]
    # Without `images`, file names are relative to the JSON's folder.
    assert load_dataset(path).images[0].path == path.parent / "b" / "two.jpg"


def test_sa1b_files_and_folders_read_back(tmp_path):
    masks = _random_masks(3, seed=1)
    for name, image_masks in (("sa_2", masks[:2]), ("sa_1", masks[2:])):
        _write_json(
            tmp_path / "sa1b" / f"{name}.json",
            {
                "image": {"image_id": 1, "file_name": f"{name}.jpg", "height": H, "width": W},
                "annotations": [
                    {"id": 100 + i, "segmentation": _compressed(m), "area": int(m.sum()), "predicted_iou": 0.9}
                    for i, m in enumerate(image_masks)
                ],
            },
        )
    folder = tmp_path / "sa1b"
    dataset = load_dataset(folder)
    assert dataset.kind == "sa1b" and dataset.num_instances == 3 and dataset.categories == {1: "object"}
    assert [entry.path for entry in dataset] == [folder / "sa_1.jpg", folder / "sa_2.jpg"]
    decoded = [instance.mask() for entry in dataset for instance in entry.instances]
    for got, expected in zip(decoded, [masks[2], masks[0], masks[1]]):
        np.testing.assert_array_equal(got, expected)
    assert [i.instance_id for i in dataset.images[1].instances] == [100, 101]

    single = load_dataset(folder / "sa_2.json", tmp_path)
    assert single.kind == "sa1b" and single.images[0].path == tmp_path / "sa_2.jpg"
    np.testing.assert_array_equal(single.images[0].instances[1].mask(), masks[1])


def test_png_mask_folders_map_to_images_by_stem(tmp_path):
    masks = _random_masks(3, seed=2)
    root = tmp_path / "masks"
    for relative, mask in (("cats/chelsea/000.png", masks[0]), ("cats/chelsea/001.png", masks[1]), ("dog/000.png", masks[2])):
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask.astype(np.uint8) * 255).save(root / relative)
    images = tmp_path / "images"
    (images / "cats").mkdir(parents=True)
    (images / "cats" / "chelsea.png").touch()
    (images / "cats" / "chelsea.jpg").touch()  # .jpg comes first
    (images / "dog.webp").touch()

    dataset = load_dataset(root, images)
    assert dataset.kind == "png" and dataset.categories == {1: "object"}
    assert [entry.path for entry in dataset] == [images / "cats" / "chelsea.jpg", images / "dog.webp"]
    chelsea, dog = dataset.images
    assert [(i.instance_id, i.height, i.width) for i in chelsea.instances] == [(0, H, W), (1, H, W)]
    for instance, expected in zip([*chelsea.instances, *dog.instances], masks):
        np.testing.assert_array_equal(instance.mask(), expected)
    # An image that is not there keeps its expected name; evaluation reports it.
    assert load_dataset(root, tmp_path).images[1].path == tmp_path / "dog.jpg"


def test_unusable_datasets_are_one_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset not found"):
        load_dataset(tmp_path / "nope.json")
    image = {"id": 1, "file_name": "a.png", "height": H, "width": W}
    triangle = [[1, 1, 9, 1, 9, 9]]
    good = _write_json(
        tmp_path / "ok.json", {"images": [image], "annotations": [{"id": 1, "image_id": 1, "segmentation": triangle}]}
    )
    with pytest.raises(FileNotFoundError, match="images folder not found"):
        load_dataset(good, tmp_path / "missing")
    crowd = {"id": 1, "image_id": 1, "segmentation": _compressed(_random_masks(1, 0)[0]), "iscrowd": 1}
    cases = [
        ({"images": [image], "annotations": []}, "no instances to evaluate"),
        ({"images": [image], "annotations": [crowd]}, r"no instances to evaluate \(1 crowd annotations skipped\)"),
        (
            {"images": [], "annotations": [{"id": 7, "image_id": 1, "segmentation": triangle}]},
            "annotation 7 refers to unknown image 1",
        ),
        (
            {"images": [{"id": 1, "file_name": "a.png"}], "annotations": [{"id": 7, "image_id": 1, "segmentation": triangle}]},
            "needs 'height' and 'width'",
        ),
        ({"images": [image], "annotations": [{"id": 7, "image_id": 1, "bbox": [1, 1, 4, 4]}]}, "has no segmentation"),
        ({"images": [{"file_name": "a.png"}]}, "needs 'id' and 'file_name'"),
        ({"info": {}}, "neither COCO instances"),
        ({"image": {"file_name": "a.jpg"}, "annotations": [{"id": 3, "segmentation": triangle}]}, "annotation 3 has no RLE"),
    ]
    for document, message in cases:
        with pytest.raises(DatasetError, match=message):
            load_dataset(_write_json(tmp_path / "bad.json", document), tmp_path)
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(DatasetError, match="cannot read .*broken.json"):
        load_dataset(tmp_path / "broken.json")
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    with pytest.raises(DatasetError, match="PNG masks as <image stem>/<k>.png"):
        load_dataset(empty)


def test_a_mask_of_the_wrong_size_is_reported(tmp_path):
    rle = _compressed(_random_masks(1, 0)[0])
    path = _write_json(
        tmp_path / "coco.json",
        {
            "images": [{"id": 1, "file_name": "a.png", "height": H + 1, "width": W}],
            "annotations": [{"id": 5, "image_id": 1, "segmentation": rle}],
        },
    )
    [instance] = load_dataset(path).images[0].instances
    with pytest.raises(DatasetError, match=f"instance 5: mask is {W}x{H}, expected {W}x{H + 1}"):
        instance.mask()
