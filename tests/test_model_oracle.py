"""Our modeling/ against the original MobileSAM/SAM code at the same (seeded random) weights.

Where both run the same kernels on the same shapes they agree bit for bit:
the embeddings, and the decoding of one prompt. Several prompts in one batch
go through our decoder's shared image side, which the reference computes per
prompt: other matrix shapes, other blocking, so they agree within
`tolerance.rounding_bound` (on AVX2 and AVX-512/AMX kernels alike).
"""

from __future__ import annotations

import pytest
import torch

from mobilesam.modeling import count_parameters
from mobilesam.registry import MODEL_CONFIGS, build_from_config, get_config
from reference import mobile_sam, paired_models
from tolerance import assert_close, assert_masks_agree, decoder_layers, encoder_layers


def _prompt_cases(generator: torch.Generator) -> dict[str, dict]:
    """Prompts in the model frame (1024 x 1024), batched as the predictor would."""

    def points(n: int, batch: int = 1) -> torch.Tensor:
        return torch.rand((batch, n, 2), generator=generator) * 1023

    def box(batch: int = 1) -> torch.Tensor:
        corners = torch.rand((batch, 2, 2), generator=generator) * 1023
        return torch.cat([corners.min(1).values, corners.max(1).values], dim=1)

    mask = torch.randn((1, 1, 256, 256), generator=generator) * 4
    return {
        "point": dict(points=(points(1), torch.tensor([[1]])), boxes=None, masks=None),
        "negative_point": dict(points=(points(1), torch.tensor([[0]])), boxes=None, masks=None),
        "box": dict(points=None, boxes=box(), masks=None),
        "point_and_box": dict(points=(points(2), torch.tensor([[1, 0]])), boxes=box(), masks=None),
        "multi_point": dict(points=(points(5), torch.tensor([[1, 1, 0, 1, 0]])), boxes=None, masks=None),
        "mask": dict(points=None, boxes=None, masks=mask),
        "point_and_mask": dict(points=(points(1), torch.tensor([[1]])), boxes=None, masks=mask),
        "batched_boxes": dict(points=None, boxes=box(batch=4), masks=None),
        "batched_points": dict(points=(points(1, batch=3), torch.ones((3, 1), dtype=torch.int)), boxes=None, masks=None),
    }


# The prompt encoder: Fourier features, or the three convolutions that downscale a mask prompt.
PROMPT_LAYERS = 3


def _check_pipeline(ours, reference, image: torch.Tensor, assert_same=None) -> None:
    """Every stage of ours against the reference's.

    `assert_same(ours, theirs, what, layers)` judges; by default identity,
    and the rounding bound for the decoding of batched prompts.
    """
    embedding_layers = encoder_layers(ours)
    logit_layers = embedding_layers + decoder_layers(ours)
    identical = assert_same or _assert_identical
    with torch.inference_mode():
        our_embeddings = ours.image_encoder(ours.preprocess(image))
        ref_embeddings = reference.image_encoder(reference.preprocess(image))
        identical(our_embeddings, ref_embeddings, "image embeddings", embedding_layers)
        identical(ours.prompt_encoder.get_dense_pe(), reference.prompt_encoder.get_dense_pe(), "dense pe", 1)
        for case, prompt in _prompt_cases(torch.Generator().manual_seed(3)).items():
            our_sparse, our_dense = ours.prompt_encoder(**prompt)
            ref_sparse, ref_dense = reference.prompt_encoder(**prompt)
            identical(our_sparse, ref_sparse, f"{case}: sparse embeddings", PROMPT_LAYERS)
            identical(our_dense, ref_dense, f"{case}: dense embeddings", PROMPT_LAYERS)
            batched = len(our_sparse) > 1
            decoded = assert_same or (assert_close if batched else _assert_identical)
            for multimask in (True, False):
                our_logits, our_iou = ours.mask_decoder(
                    our_embeddings, ours.prompt_encoder.get_dense_pe(), our_sparse, our_dense, multimask
                )
                ref_logits, ref_iou = reference.mask_decoder(
                    ref_embeddings, reference.prompt_encoder.get_dense_pe(), ref_sparse, ref_dense, multimask
                )
                decoded(our_logits, ref_logits, f"{case} multimask={multimask}: low-res logits", logit_layers)
                decoded(our_iou, ref_iou, f"{case} multimask={multimask}: iou predictions", logit_layers)


def _assert_identical(ours: torch.Tensor, theirs: torch.Tensor, what: str, layers: int) -> None:
    assert torch.equal(ours, theirs), f"{what}: not bit for bit, max abs diff {(ours - theirs).abs().max().item():.3g}"


def _image(seed: int, h: int = 1024, w: int = 1024) -> torch.Tensor:
    """A resized image as the predictor hands it over: (1, 3, h, w) floats in [0, 255]."""
    return torch.rand((1, 3, h, w), generator=torch.Generator().manual_seed(seed)) * 255


def test_vit_t_matches_reference():
    ours, reference = paired_models("vit_t")
    _check_pipeline(ours, reference, _image(1))


@pytest.mark.parametrize(
    ("mistake", "parameter"),
    [
        ("swap two weights", "mask_decoder.transformer.layers.1.cross_attn_image_to_token.v_proj.weight"),
        ("scale a norm by 1.001", "image_encoder.neck.1.weight"),
        ("scale an attention projection by 1.001", "image_encoder.layers.2.blocks.3.attn.qkv.weight"),
    ],
)
def test_the_rounding_bound_catches_small_mistakes(mistake, parameter):
    ours, reference = paired_models("vit_t")
    with torch.no_grad():
        weight = ours.get_parameter(parameter)
        if mistake == "swap two weights":
            flat = weight.view(-1)
            flat[[0, 1]] = flat[[1, 0]]
        else:
            weight.mul_(1.001)
    with pytest.raises(AssertionError, match="exceeds the rounding bound"):
        _check_pipeline(ours, reference, _image(1), assert_same=assert_close)


def test_vit_t_non_square_input_is_padded_like_reference():
    ours, reference = paired_models("vit_t", seed=5)
    with torch.inference_mode():
        image = _image(2, 683, 1024)
        assert torch.equal(ours.preprocess(image), reference.preprocess(image)), "preprocess"
        logits = torch.randn((2, 3, 256, 256), generator=torch.Generator().manual_seed(0))
        assert torch.equal(
            ours.postprocess_masks(logits, (683, 1024), (480, 720)),
            reference.postprocess_masks(logits, (683, 1024), (480, 720)),
        ), "postprocess_masks"


def test_sam_forward_matches_reference():
    ours, reference = paired_models("vit_t", seed=7)
    generator = torch.Generator().manual_seed(11)
    batched_input = [
        {
            "image": _image(4, 768, 1024)[0],
            "original_size": (600, 800),
            "point_coords": torch.rand((2, 3, 2), generator=generator) * 700,
            "point_labels": torch.tensor([[1, 0, 1], [1, 1, 1]]),
        },
        {"image": _image(5, 1024, 512)[0], "original_size": (1000, 500), "boxes": torch.tensor([[10.0, 20.0, 300.0, 900.0]])},
    ]
    with torch.inference_mode():
        our_out = ours(batched_input, multimask_output=True)
        ref_out = reference(batched_input, multimask_output=True)
    layers = encoder_layers(ours) + decoder_layers(ours)
    for record, mine, theirs in zip(batched_input, our_out, ref_out):
        assert_close(mine["low_res_logits"], theirs["low_res_logits"], "low-res logits", layers)
        assert_close(mine["iou_predictions"], theirs["iou_predictions"], "iou predictions", layers)
        with torch.inference_mode():
            ref_logits = reference.postprocess_masks(
                theirs["low_res_logits"], record["image"].shape[-2:], record["original_size"]
            )
        assert_masks_agree(mine["masks"].numpy(), theirs["masks"].numpy(), ref_logits.numpy(), "masks", layers)


def test_state_dicts_load_strictly_both_ways():
    torch.manual_seed(0)
    reference = mobile_sam.sam_model_registry["vit_t"]()
    ours = build_from_config(get_config("vit_t"))
    ours.load_state_dict(reference.state_dict(), strict=True)
    reference.load_state_dict(ours.state_dict(), strict=True)


@pytest.mark.parametrize("name", list(MODEL_CONFIGS))
def test_full_configs_have_reference_keys_shapes_and_parameter_counts(name):
    with torch.device("meta"):
        ours = build_from_config(get_config(name))
    # The reference TinyViT calls .item() while building, which the meta device refuses; it is small.
    with torch.device("cpu" if name == "vit_t" else "meta"):
        reference = mobile_sam.sam_model_registry[name]()
    ours_shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    ref_shapes = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    assert ours_shapes == ref_shapes
    assert count_parameters(ours) == count_parameters(reference)


def test_mobilesam_parameter_count_is_about_ten_million():
    with torch.device("meta"):
        model = build_from_config(get_config("vit_t"))
    assert 9.5e6 < count_parameters(model) < 10.5e6
    assert 5.0e6 < count_parameters(model.image_encoder) < 7.0e6


@pytest.mark.slow
def test_vit_b_matches_reference():
    # Three blocks (windowed, windowed, global) instead of twelve: the same code
    # paths at the real width, heads, window and input size, a quarter of the time.
    ours, reference = paired_models("vit_b", seed=1, depth=3, global_attn_indexes=(2,))
    _check_pipeline(ours, reference, _image(6))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vit_l", "vit_h"])
def test_shrunken_large_vits_match_reference(name):
    # Two blocks, the second global, at the real width, heads and input size.
    ours, reference = paired_models(name, seed=2, depth=2, global_attn_indexes=(1,))
    _check_pipeline(ours, reference, _image(8))
