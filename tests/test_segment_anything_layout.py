"""segment_anything's own notebook code, with `segment_anything` renamed `mobilesam` and nothing else.

The cells come from github:facebookresearch/segment-anything, notebooks/
predictor_example.ipynb, automatic_mask_generator_example.ipynb and
onnx_model_example.ipynb (cited per cell). Only the import, the weights (a
seeded random MobileSAM saved to a file), the device ("cpu") and the images
differ; plotting cells are left out. Results are compared with
segment_anything's own `SamPredictor`, `SamAutomaticMaskGenerator` and
`SamOnnxModel` run on the same weights: its `Sam` with its prompt encoder and
mask decoder, and our TinyViT as the image encoder (segment_anything has none).
"""

from __future__ import annotations

import dataclasses
import importlib
import subprocess
import sys
import warnings

import cv2
import numpy as np
import pytest
import segment_anything
import torch
from segment_anything.modeling import MaskDecoder as SaMaskDecoder
from segment_anything.modeling import PromptEncoder as SaPromptEncoder
from segment_anything.modeling import Sam as SaSam
from segment_anything.modeling import TwoWayTransformer as SaTwoWayTransformer
from skimage import data

import mobilesam
from mobilesam.masks import mask_iou
from mobilesam.registry import CheckpointError, build_from_config, get_config, load_from_config, model_name
from mobilesam.weights import save_checkpoint
from reference import randomize
from tolerance import assert_close, assert_masks_agree, decoder_layers, encoder_layers


def segment_anything_twin(ours: torch.nn.Module) -> SaSam:
    """segment_anything's `Sam` with its own prompt encoder and mask decoder, our encoder, and our weights."""
    grid = ours.img_size // 16
    twin = SaSam(
        image_encoder=build_from_config(ours.config).image_encoder,
        prompt_encoder=SaPromptEncoder(
            embed_dim=256, image_embedding_size=(grid, grid), input_image_size=(ours.img_size, ours.img_size), mask_in_chans=16
        ),
        mask_decoder=SaMaskDecoder(
            num_multimask_outputs=3,
            transformer=SaTwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
            transformer_dim=256,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        ),
    )
    twin.load_state_dict(ours.state_dict(), strict=True)
    return twin.eval()


@pytest.fixture(scope="module")
def sam_checkpoint(tmp_path_factory) -> str:
    """A seeded random MobileSAM (vit_t, 1024) saved as a plain state dict, the official checkpoints' layout."""
    path = tmp_path_factory.mktemp("segment_anything") / "mobile_sam_random.pt"
    save_checkpoint(randomize(build_from_config(get_config("vit_t")), seed=21), path)
    return str(path)


def truck_sized(image: np.ndarray) -> np.ndarray:
    """`image` at truck.jpg's size (1800 x 1200), so the notebooks' coordinates fall inside it."""
    return cv2.resize(image, (1800, 1200), interpolation=cv2.INTER_LINEAR)


# --- the module layout -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("module_first", [True, False], ids=["module-first", "function-first"])
def test_build_sam_is_a_module_and_the_package_function_in_either_import_order(module_first):
    # A fresh interpreter per order: importing the submodule binds the package attribute only the first time.
    module_import = (
        "from mobilesam.build_sam import sam_model_registry, build_sam_vit_h, build_sam_vit_l, build_sam_vit_b, build_sam_vit_t"
    )
    function_import = "import mobilesam; from mobilesam import build_sam; assert build_sam is mobilesam.build_sam"
    first, second = (module_import, function_import) if module_first else (function_import, module_import)
    code = "; ".join(
        [
            first,
            second,
            "import importlib, inspect, sys, mobilesam, mobilesam.registry as registry",
            "module = importlib.import_module('mobilesam.build_sam')",
            "assert inspect.ismodule(module) and module is sys.modules['mobilesam.build_sam']",
            "assert mobilesam.build_sam is registry.build_sam, mobilesam.build_sam",
            "assert module.sam_model_registry is registry.sam_model_registry",
            "assert mobilesam.build_sam('vit_t').img_size == 1024",
            "import mobilesam.build_sam as same; assert same is registry.build_sam",  # as segment_anything's
        ]
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_segment_anything_module_names_exist():
    for name in ("build_sam", "automatic_mask_generator", "predictor", "utils.transforms", "utils.amg"):
        theirs = importlib.import_module(f"segment_anything.{name}")
        ours = importlib.import_module(f"mobilesam.{name}")
        # Every public class and function users import from segment_anything's module, but MaskData and batch_iterator.
        public = {
            n for n, v in vars(theirs).items() if not n.startswith("_") and getattr(v, "__module__", "") == theirs.__name__
        } - {"MaskData", "batch_iterator", "build_sam"}
        assert public <= set(vars(ours)), f"mobilesam.{name} lacks {sorted(public - set(vars(ours)))}"
    from mobilesam.automatic_mask_generator import SamAutomaticMaskGenerator
    from mobilesam.utils.transforms import ResizeLongestSide

    assert SamAutomaticMaskGenerator is mobilesam.SamAutomaticMaskGenerator
    assert ResizeLongestSide(1024).get_preprocess_shape(1200, 1800, 1024) == (683, 1024)


def test_builders_load_their_model_and_refuse_another_models_checkpoint(sam_checkpoint):
    from mobilesam.build_sam import build_sam_vit_b, build_sam_vit_h, build_sam_vit_l, build_sam_vit_t, sam_model_registry

    assert set(segment_anything.sam_model_registry) | {"vit_t"} <= set(sam_model_registry)
    sam = build_sam_vit_t(sam_checkpoint)
    expected = torch.load(sam_checkpoint, weights_only=True)
    assert all(torch.equal(value, expected[key]) for key, value in sam.state_dict().items())
    assert not sam.training
    for builder, name in ((build_sam_vit_h, "vit_h"), (build_sam_vit_l, "vit_l"), (build_sam_vit_b, "vit_b")):
        with pytest.raises(CheckpointError, match=f"not {name!r}"):
            builder(checkpoint=sam_checkpoint)


def test_amg_functions_match_segment_anything():
    from mobilesam.utils import amg

    theirs = segment_anything.utils.amg
    rng = torch.Generator().manual_seed(0)
    masks = torch.rand((3, 37, 53), generator=rng) > 0.6
    masks[1] = False
    logits = torch.randn((2, 3, 40, 50), generator=rng) * 3
    for name in ("mask_to_rle_pytorch", "batched_mask_to_box"):
        assert str(getattr(amg, name)(masks)) == str(getattr(theirs, name)(masks)), name
    rles = amg.mask_to_rle_pytorch(masks)
    for rle in rles:
        assert np.array_equal(amg.rle_to_mask(rle), theirs.rle_to_mask(rle))
        assert amg.area_from_rle(rle) == theirs.area_from_rle(rle)
        assert amg.coco_encode_rle(rle) == theirs.coco_encode_rle(rle)
    assert torch.equal(amg.calculate_stability_score(logits, 0.0, 1.0), theirs.calculate_stability_score(logits, 0.0, 1.0))
    assert np.array_equal(amg.build_point_grid(5), theirs.build_point_grid(5))
    for ours_grid, their_grid in zip(amg.build_all_layer_point_grids(8, 2, 2), theirs.build_all_layer_point_grids(8, 2, 2)):
        assert np.array_equal(ours_grid, their_grid)
    assert amg.generate_crop_boxes((400, 600), 2, 512 / 1500) == theirs.generate_crop_boxes((400, 600), 2, 512 / 1500)
    boxes, crop, orig = torch.tensor([[0, 3, 20, 40], [5, 5, 100, 90]]), [10, 20, 110, 120], [0, 0, 600, 400]
    assert torch.equal(amg.box_xyxy_to_xywh(boxes[1]), theirs.box_xyxy_to_xywh(boxes[1]))
    assert torch.equal(amg.uncrop_boxes_xyxy(boxes, crop), theirs.uncrop_boxes_xyxy(boxes, crop))
    assert torch.equal(amg.uncrop_points(boxes[:, :2], crop), theirs.uncrop_points(boxes[:, :2], crop))
    assert torch.equal(amg.uncrop_masks(masks, crop, 400, 600), theirs.uncrop_masks(masks, crop, 400, 600))
    assert torch.equal(amg.is_box_near_crop_edge(boxes, crop, orig), theirs.is_box_near_crop_edge(boxes, crop, orig))
    for mode in ("holes", "islands"):
        ours_mask, ours_changed = amg.remove_small_regions(masks[0].numpy(), 5, mode)
        their_mask, their_changed = theirs.remove_small_regions(masks[0].numpy(), 5, mode)
        assert np.array_equal(ours_mask, their_mask) and ours_changed == their_changed


# --- predictor_example.ipynb ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_predictor_example_notebook(sam_checkpoint):
    image = truck_sized(data.coffee())
    # predictor_example.ipynb, cell "Selecting objects with SAM": the import renamed, our weights, the CPU.
    from mobilesam import SamPredictor, sam_model_registry

    model_type = "vit_t"
    device = "cpu"

    sam = sam_model_registry[model_type](checkpoint=sam_checkpoint)
    sam.to(device=device)

    predictor = SamPredictor(sam)
    predictor.set_image(image)

    reference = segment_anything.SamPredictor(segment_anything_twin(sam))
    reference.set_image(image)
    layers = encoder_layers(sam) + decoder_layers(sam)

    def agree(ours, theirs, what):
        (masks, scores, logits), (their_masks, their_scores, their_logits) = ours, theirs
        assert_close(scores, their_scores, f"{what}: scores", layers)
        assert_close(logits, their_logits, f"{what}: low-res logits", layers)
        assert_masks_agree(masks, their_masks, _full_logits(reference, their_logits), f"{what}: masks", layers)

    # Cell: one point.
    input_point = np.array([[500, 375]])
    input_label = np.array([1])
    masks, scores, logits = predictor.predict(
        point_coords=input_point,
        point_labels=input_label,
        multimask_output=True,
    )
    assert masks.shape == (3, 1200, 1800)  # (number_of_masks) x H x W
    agree((masks, scores, logits), reference.predict(input_point, input_label, multimask_output=True), "one point")

    # Cells: two points and the best mask as the mask input, then a negative second point.
    for labels in ([1, 1], [1, 0]):
        input_point = np.array([[500, 375], [1125, 625]])
        input_label = np.array(labels)

        mask_input = logits[np.argmax(scores), :, :]  # Choose the model's best mask
        ours = predictor.predict(
            point_coords=input_point,
            point_labels=input_label,
            mask_input=mask_input[None, :, :],
            multimask_output=False,
        )
        assert ours[0].shape == (1, 1200, 1800)
        theirs = reference.predict(input_point, input_label, mask_input=mask_input[None, :, :], multimask_output=False)
        agree(ours, theirs, f"two points {labels} and a mask")

    # Cell: a box.
    input_box = np.array([425, 600, 700, 875])
    ours = predictor.predict(
        point_coords=None,
        point_labels=None,
        box=input_box[None, :],
        multimask_output=False,
    )
    agree(ours, reference.predict(None, None, box=input_box[None, :], multimask_output=False), "a box")

    # Cell: a box and a negative point.
    input_box = np.array([425, 600, 700, 875])
    input_point = np.array([[575, 750]])
    input_label = np.array([0])
    ours = predictor.predict(
        point_coords=input_point,
        point_labels=input_label,
        box=input_box,
        multimask_output=False,
    )
    agree(ours, reference.predict(input_point, input_label, box=input_box, multimask_output=False), "a box and a point")

    # Cells: batched boxes through predict_torch.
    input_boxes = torch.tensor(
        [
            [75, 275, 1725, 850],
            [425, 600, 700, 875],
            [1375, 550, 1650, 800],
            [1240, 675, 1400, 750],
        ],
        device=predictor.device,
    )
    transformed_boxes = predictor.transform.apply_boxes_torch(input_boxes, image.shape[:2])
    masks, scores, logits = predictor.predict_torch(
        point_coords=None,
        point_labels=None,
        boxes=transformed_boxes,
        multimask_output=False,
    )
    assert masks.shape == (4, 1, 1200, 1800)  # (batch_size) x (num_predicted_masks_per_input) x H x W
    their_boxes = reference.transform.apply_boxes_torch(input_boxes, image.shape[:2])
    theirs = reference.predict_torch(None, None, boxes=their_boxes, multimask_output=False)
    agree([t.numpy() for t in (masks, scores, logits)], [t.numpy() for t in theirs], "batched boxes")

    # Cells: end to end on two images, through ResizeLongestSide and Sam.forward.
    image1 = image  # truck.jpg from above
    image1_boxes = torch.tensor(
        [
            [75, 275, 1725, 850],
            [425, 600, 700, 875],
            [1375, 550, 1650, 800],
            [1240, 675, 1400, 750],
        ],
        device=sam.device,
    )

    image2 = cv2.resize(data.chelsea(), (1280, 720), interpolation=cv2.INTER_LINEAR)  # for images/groceries.jpg
    image2_boxes = torch.tensor(
        [
            [450, 170, 520, 350],
            [350, 190, 450, 350],
            [500, 170, 580, 350],
            [580, 170, 640, 350],
        ],
        device=sam.device,
    )

    from mobilesam.utils.transforms import ResizeLongestSide

    resize_transform = ResizeLongestSide(sam.image_encoder.img_size)

    def prepare_image(image, transform, device):
        image = transform.apply_image(image)
        image = torch.as_tensor(image, device=device.device)
        return image.permute(2, 0, 1).contiguous()

    batched_input = [
        {
            "image": prepare_image(image1, resize_transform, sam),
            "boxes": resize_transform.apply_boxes_torch(image1_boxes, image1.shape[:2]),
            "original_size": image1.shape[:2],
        },
        {
            "image": prepare_image(image2, resize_transform, sam),
            "boxes": resize_transform.apply_boxes_torch(image2_boxes, image2.shape[:2]),
            "original_size": image2.shape[:2],
        },
    ]
    with torch.inference_mode():
        batched_output = sam(batched_input, multimask_output=False)
        their_output = reference.model(batched_input, multimask_output=False)
    assert batched_output[0].keys() == their_output[0].keys() == {"masks", "iou_predictions", "low_res_logits"}
    for ours, theirs, size in zip(batched_output, their_output, ((1200, 1800), (720, 1280))):
        assert ours["masks"].shape == (4, 1, *size)
        assert_close(ours["low_res_logits"], theirs["low_res_logits"], "Sam.forward logits", layers)
        assert_close(ours["iou_predictions"], theirs["iou_predictions"], "Sam.forward scores", layers)


def _full_logits(reference, low_res_logits: np.ndarray) -> np.ndarray:
    """segment_anything's full-size logits for its low-res ones, to tell which mask pixels lie near the threshold."""
    with torch.inference_mode():
        logits = torch.as_tensor(low_res_logits)
        logits = logits[None] if logits.ndim == 3 else logits
        full = reference.model.postprocess_masks(logits, reference.input_size, reference.original_size)
    return full.numpy() if low_res_logits.ndim == 4 else full[0].numpy()


# --- automatic_mask_generator_example.ipynb ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def confident_sam(sam_checkpoint):
    """The random MobileSAM at input size 256, with sharp masks and high predicted IoUs so some pass SAM's filters.

    Random weights give soft masks of low predicted quality that segment_anything's
    default thresholds reject; scaling the mask logits by 30 and lifting the IoU head by 1
    keeps the network as it is otherwise. Loaded through `load_from_config`: the
    notebook's loading cell is tested at full size above, and the whole grid of the
    notebook's 1024-sized model takes minutes on two cores.
    """
    sam = load_from_config(dataclasses.replace(get_config("vit_t"), image_size=256), sam_checkpoint)
    with torch.no_grad():
        for mlp in sam.mask_decoder.output_hypernetworks_mlps:
            mlp.layers[-1].weight *= 30
            mlp.layers[-1].bias *= 30
        sam.mask_decoder.iou_prediction_head.layers[-1].bias += 1
    return sam.eval()


@pytest.mark.slow
def test_automatic_mask_generator_example_notebook(confident_sam):
    sam = confident_sam
    image = data.coffee()
    # automatic_mask_generator_example.ipynb, "Automatic mask generation": the import renamed and, to fit the
    # test's time, 8 points per side instead of the default 32 (then 32 in the options cell).
    from mobilesam import SamAutomaticMaskGenerator

    mask_generator = SamAutomaticMaskGenerator(sam, points_per_side=8)
    masks = mask_generator.generate(image)
    assert len(masks) > 0
    assert masks[0].keys() == {"segmentation", "area", "bbox", "predicted_iou", "point_coords", "stability_score", "crop_box"}

    their_masks = segment_anything.SamAutomaticMaskGenerator(segment_anything_twin(sam), points_per_side=8).generate(image)
    _same_records(masks, their_masks)

    # Cell "Automatic mask generation options".
    mask_generator_2 = SamAutomaticMaskGenerator(
        model=sam,
        points_per_side=8,
        pred_iou_thresh=0.86,
        stability_score_thresh=0.92,
        crop_n_layers=1,
        crop_n_points_downscale_factor=2,
        min_mask_region_area=100,  # Requires open-cv to run post-processing
    )
    masks2 = mask_generator_2.generate(image)
    assert all(record["segmentation"].shape == (400, 600) for record in masks2)
    their_generator = segment_anything.SamAutomaticMaskGenerator(
        segment_anything_twin(sam),
        points_per_side=8,
        pred_iou_thresh=0.86,
        stability_score_thresh=0.92,
        crop_n_layers=1,
        crop_n_points_downscale_factor=2,
        min_mask_region_area=100,
    )
    _same_records(masks2, their_generator.generate(image))


def _same_records(ours: list[dict], theirs: list[dict]) -> None:
    """The same masks from the same prompts, as segment_anything gives them, up to rounding."""
    assert len(ours) == len(theirs)
    key = lambda record: (record["point_coords"], record["crop_box"])  # noqa: E731
    for mine, their in zip(sorted(ours, key=key), sorted(theirs, key=key)):
        assert mine["point_coords"] == their["point_coords"] and mine["crop_box"] == their["crop_box"]
        assert mask_iou(mine["segmentation"], their["segmentation"]) >= 0.999
        assert mine["predicted_iou"] == pytest.approx(their["predicted_iou"], abs=1e-4)
        assert mine["stability_score"] == pytest.approx(their["stability_score"], abs=1e-3)


# --- onnx_model_example.ipynb ------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export:DeprecationWarning")
@pytest.mark.filterwarnings("ignore:The feature will be removed:DeprecationWarning")
def test_onnx_model_example_notebook_with_segment_anythings_wrapper(sam_checkpoint, tmp_path):
    import onnxruntime
    from segment_anything.utils.onnx import SamOnnxModel

    from mobilesam import SamPredictor

    # Input size 256 keeps the export quick; the wrapper reads the same attributes at any size.
    sam = load_from_config(dataclasses.replace(get_config("vit_t"), image_size=256), sam_checkpoint).eval()
    image = truck_sized(data.astronaut())
    torch.manual_seed(0)

    # onnx_model_example.ipynb, "Export an ONNX model": the notebook's cell, written to a temporary file.
    onnx_model_path = str(tmp_path / "sam_onnx_example.onnx")

    onnx_model = SamOnnxModel(sam, return_single_mask=True)

    dynamic_axes = {
        "point_coords": {1: "num_points"},
        "point_labels": {1: "num_points"},
    }

    embed_dim = sam.prompt_encoder.embed_dim
    embed_size = sam.prompt_encoder.image_embedding_size
    mask_input_size = [4 * x for x in embed_size]
    dummy_inputs = {
        "image_embeddings": torch.randn(1, embed_dim, *embed_size, dtype=torch.float),
        "point_coords": torch.randint(low=0, high=1024, size=(1, 5, 2), dtype=torch.float),
        "point_labels": torch.randint(low=0, high=4, size=(1, 5), dtype=torch.float),
        "mask_input": torch.randn(1, 1, *mask_input_size, dtype=torch.float),
        "has_mask_input": torch.tensor([1], dtype=torch.float),
        "orig_im_size": torch.tensor([1500, 2250], dtype=torch.float),
    }
    output_names = ["masks", "iou_predictions", "low_res_masks"]

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=UserWarning)
        with open(onnx_model_path, "wb") as f:
            torch.onnx.export(
                onnx_model,
                tuple(dummy_inputs.values()),
                f,
                export_params=True,
                verbose=False,
                opset_version=17,
                do_constant_folding=True,
                input_names=list(dummy_inputs.keys()),
                output_names=output_names,
                dynamic_axes=dynamic_axes,
                dynamo=False,  # the TorchScript exporter the notebook used; torch 2.9+ defaults to dynamo
            )

    ort_session = onnxruntime.InferenceSession(onnx_model_path, providers=["CPUExecutionProvider"])
    predictor = SamPredictor(sam, backend="torch")
    predictor.set_image(image)
    image_embedding = predictor.get_image_embedding().cpu().numpy()
    assert image_embedding.shape == (1, 256, 16, 16)

    def run(onnx_coord, onnx_label, onnx_mask_input, onnx_has_mask_input):
        ort_inputs = {
            "image_embeddings": image_embedding,
            "point_coords": onnx_coord,
            "point_labels": onnx_label,
            "mask_input": onnx_mask_input,
            "has_mask_input": onnx_has_mask_input,
            "orig_im_size": np.array(image.shape[:2], dtype=np.float32),
        }
        return ort_session.run(None, ort_inputs)

    layers = decoder_layers(sam)

    def agree(onnx_outputs, ours, what):
        # The graph picks SAM's best mask: of the three for one point, the single one for more prompts.
        masks, scores, low_res_logits = onnx_outputs
        our_masks, our_scores, our_logits = ours
        best = int(np.argmax(our_scores))
        assert_close(scores[0], our_scores[best : best + 1], f"{what}: score", layers)
        assert_close(low_res_logits[0], our_logits[best : best + 1], f"{what}: low-res logits", layers)
        assert_masks_agree(masks[0] > sam.mask_threshold, our_masks[best : best + 1], masks[0], f"{what}: mask", layers + 2)

    # Cells "Example point": one point, padded with a "not a point".
    input_point = np.array([[500, 375]])
    input_label = np.array([1])
    onnx_coord = np.concatenate([input_point, np.array([[0.0, 0.0]])], axis=0)[None, :, :]
    onnx_label = np.concatenate([input_label, np.array([-1])], axis=0)[None, :].astype(np.float32)
    onnx_coord = predictor.transform.apply_coords(onnx_coord, image.shape[:2]).astype(np.float32)
    onnx_mask_input = np.zeros((1, 1, 64, 64), dtype=np.float32)
    onnx_has_mask_input = np.zeros(1, dtype=np.float32)
    masks, _, low_res_logits = run(onnx_coord, onnx_label, onnx_mask_input, onnx_has_mask_input)
    assert masks.shape == (1, 1, 1200, 1800)
    agree((masks, _, low_res_logits), predictor.predict(input_point, input_label, multimask_output=True), "one point")

    # Cells "Example mask input": a second point and the previous low-res logits.
    input_point = np.array([[500, 375], [1125, 625]])
    input_label = np.array([1, 1])
    onnx_mask_input = low_res_logits
    onnx_coord = np.concatenate([input_point, np.array([[0.0, 0.0]])], axis=0)[None, :, :]
    onnx_label = np.concatenate([input_label, np.array([-1])], axis=0)[None, :].astype(np.float32)
    onnx_coord = predictor.transform.apply_coords(onnx_coord, image.shape[:2]).astype(np.float32)
    onnx_has_mask_input = np.ones(1, dtype=np.float32)
    outputs = run(onnx_coord, onnx_label, onnx_mask_input, onnx_has_mask_input)
    ours = predictor.predict(input_point, input_label, mask_input=low_res_logits[0], multimask_output=False)
    agree(outputs, ours, "two points and a mask")

    # Cells "Example box and point input": a box as two corner points labelled 2 and 3.
    input_box = np.array([425, 600, 700, 875])
    input_point = np.array([[575, 750]])
    input_label = np.array([0])
    onnx_box_coords = input_box.reshape(2, 2)
    onnx_box_labels = np.array([2, 3])
    onnx_coord = np.concatenate([input_point, onnx_box_coords], axis=0)[None, :, :]
    onnx_label = np.concatenate([input_label, onnx_box_labels], axis=0)[None, :].astype(np.float32)
    onnx_coord = predictor.transform.apply_coords(onnx_coord, image.shape[:2]).astype(np.float32)
    onnx_mask_input = np.zeros((1, 1, 64, 64), dtype=np.float32)
    onnx_has_mask_input = np.zeros(1, dtype=np.float32)
    outputs = run(onnx_coord, onnx_label, onnx_mask_input, onnx_has_mask_input)
    ours = predictor.predict(input_point, input_label, box=input_box, multimask_output=False)
    agree(outputs, ours, "a box and a point")


def test_build_sam_without_a_name_builds_the_model_its_checkpoint_holds(tmp_path):
    # segment_anything's `build_sam(checkpoint=...)` is its ViT-H builder; ours reads the model off the file.
    from mobilesam.build_sam import build_sam

    path = save_checkpoint(randomize(build_sam("vit_t"), seed=4), tmp_path / "weights.pt")
    assert model_name(build_sam(checkpoint=path)) == "vit_t"
    assert model_name(build_sam()) == "vit_t"
