"""The open registry: a new encoder family is one encoder and one record, and every model knows what it is.

The family here is a plain ViT (global attention in every block, as in
ViTDet's plain backbone) built from our `ImageEncoderViT`: existing layers,
its own config type, builder and checkpoint recogniser.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

from images import generated_image
from mobilesam import SamPredictor
from mobilesam.families import FAMILIES, ModelFamily, register_family
from mobilesam.modeling import ImageEncoderViT, Sam
from mobilesam.modeling.vit import Block as ViTBlock
from mobilesam.registry import (
    MODEL_CONFIGS,
    ModelConfig,
    build_from_config,
    build_sam,
    detect_model_name,
    get_config,
    load_sam,
    model_name,
    register_model,
    sam_model_registry,
)
from mobilesam.weights import read_state_dict, save_checkpoint
from reference import randomize
from tolerance import encoder_layers


@dataclass(frozen=True)
class PlainViTConfig:
    """A ViT whose blocks all attend globally."""

    embed_dim: int
    depth: int
    num_heads: int
    patch_size: int = 16


def build_plain_vit(encoder: PlainViTConfig, config: ModelConfig) -> nn.Module:
    return ImageEncoderViT(
        img_size=config.image_size,
        patch_size=encoder.patch_size,
        embed_dim=encoder.embed_dim,
        depth=encoder.depth,
        num_heads=encoder.num_heads,
        global_attn_indexes=tuple(range(encoder.depth)),
        out_chans=config.prompt_embed_dim,
    )


def recognise_plain_vit(state_dict: Mapping[str, torch.Tensor], configs: Sequence[ModelConfig]) -> str | None:
    """By width, once the first block's relative positions span the whole grid (global attention)."""
    pos_embed = state_dict.get("image_encoder.pos_embed")  # (1, H/16, W/16, width)
    rel_pos = state_dict.get("image_encoder.blocks.0.attn.rel_pos_h")  # (2 * attended side - 1, head_dim)
    if pos_embed is None or rel_pos is None or rel_pos.shape[0] != 2 * pos_embed.shape[1] - 1:
        return None
    return next((c.name for c in configs if c.encoder.embed_dim == pos_embed.shape[-1]), None)


PLAIN_VIT = ModelFamily(
    name="plain ViT",
    config_type=PlainViTConfig,
    build_encoder=build_plain_vit,
    recognise=recognise_plain_vit,
    fast_encoder=None,
    layer_types=(ViTBlock,),
)
PLAIN = ModelConfig(
    name="plain_vit_test",
    description="a two-block plain ViT at 256 px",
    encoder=PlainViTConfig(embed_dim=48, depth=2, num_heads=2),
    image_size=256,
    aliases=("plain_test",),
)


@pytest.fixture
def plain_vit() -> ModelConfig:
    """The family and its one model, registered for one test; the other tests see the published models only."""
    tables = (FAMILIES, MODEL_CONFIGS, sam_model_registry)
    saved = [dict(table) for table in tables]
    register_family(PLAIN_VIT)
    register_model(PLAIN)
    yield PLAIN
    for table, before in zip(tables, saved):
        table.clear()
        table.update(before)


@pytest.mark.parametrize("name", ["plain_vit_test", "plain_test"])
def test_a_registered_family_builds_by_name(plain_vit, name):
    model = build_sam(name)
    assert isinstance(model.image_encoder, ImageEncoderViT)
    assert all(block.window_size == 0 for block in model.image_encoder.blocks)
    assert model.config is plain_vit and model_name(model) == "plain_vit_test"
    assert model_name(sam_model_registry[name]()) == "plain_vit_test"
    # The tests' rounding bound reads the family's layer types: two blocks, patch embedding and neck.
    assert encoder_layers(model) == 4


def test_its_checkpoint_is_recognised_and_loads(plain_vit, tmp_path):
    model = randomize(build_sam("plain_vit_test"), seed=1)
    path = save_checkpoint(model, tmp_path / "plain.pt")
    assert detect_model_name(read_state_dict(path)) == "plain_vit_test"
    loaded = load_sam(path)
    assert model_name(loaded) == "plain_vit_test"
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
    # The published families still claim their own weights first.
    assert detect_model_name(build_from_config(get_config("vit_t")).state_dict()) == "vit_t"


def test_the_predictor_runs_it(plain_vit):
    predictor = SamPredictor(randomize(build_sam("plain_vit_test"), seed=2), backend="torch")
    image = generated_image(120, 200, seed=3)
    predictor.set_image(image)
    masks, scores, logits = predictor.predict(point_coords=np.array([[60.0, 50.0]]), point_labels=np.array([1]))
    assert masks.shape == (3, 120, 200) and scores.shape == (3,) and logits.shape == (3, 64, 64)


def test_registering_a_taken_family_or_name_fails(plain_vit):
    with pytest.raises(ValueError, match="PlainViTConfig already belongs to the registered family 'plain ViT'"):
        register_family(dataclasses.replace(PLAIN_VIT, name="again"))
    with pytest.raises(ValueError, match="already registered: 'plain_vit_test', 'plain_test'"):
        register_model(plain_vit)
    with pytest.raises(ValueError, match="already registered: 'vit_t'"):
        register_model(dataclasses.replace(plain_vit, name="another", aliases=("vit_t",)))
    assert "another" not in MODEL_CONFIGS and "another" not in sam_model_registry


def test_a_model_of_an_unregistered_family_is_refused():
    with pytest.raises(TypeError, match=re.escape("no family registered for PlainViTConfig")):
        register_model(PLAIN)
    with pytest.raises(TypeError, match="no family registered"):
        build_from_config(PLAIN)
    assert PLAIN.name not in MODEL_CONFIGS


def test_the_model_carries_its_config_through_copies():
    config = dataclasses.replace(get_config("vit_t"), image_size=256)
    model = build_from_config(config)
    assert copy.deepcopy(model).config == config and model.to("cpu").eval().config is config
    # Assembled by hand it carries nothing, and its name comes from its weights.
    by_hand = Sam(model.image_encoder, model.prompt_encoder, model.mask_decoder)
    assert by_hand.config is None and model_name(by_hand) == "vit_t"
