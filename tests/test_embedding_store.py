"""`EmbeddingStore` and `mobilesam embed`: embeddings kept on disk, found by pixels, refused for another model."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from counting import counting
from PIL import Image

from images import generated_image
from mobilesam.embedding_store import STORE_FILE, EmbeddingStore, EmbeddingStoreError
from mobilesam.io.images import load_image, pixels_digest
from mobilesam.predictor import SamPredictor
from mobilesam.registry import build_from_config, get_config
from reference import randomize

POINTS = [(40, 30), (200, 60), (400, 100), (120, 90)]


def _small_model(seed: int):
    return randomize(build_from_config(dataclasses.replace(get_config("vit_t"), image_size=256)), seed=seed)


@pytest.fixture(scope="module")
def model():
    return _small_model(seed=5)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return generated_image(seed=2)


@pytest.fixture(scope="module")
def reference(model, image):
    return SamPredictor(model, "torch").embed(image)


@pytest.fixture
def predictor(model):
    """A torch predictor without a store, its encoder runs counted."""
    return counting(SamPredictor(model, "torch"))


def stored(model, root, **options) -> SamPredictor:
    """A torch predictor reading the store at `root`, its encoder runs counted."""
    return counting(SamPredictor(model, "torch", embeddings=EmbeddingStore(root, model, **options)))


def _stored_files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.safetensors"))


def _no_temporaries(root: Path) -> None:
    hidden = list(root.rglob(".*"))
    assert not hidden, f"temporary files left: {hidden}"


def test_a_stored_fp32_embedding_is_the_predictors_bit_for_bit(model, image, reference, tmp_path):
    predictor = stored(model, tmp_path / "store")
    first = predictor.embed(image)
    assert predictor.encoder_calls == 1
    assert torch.equal(first.features, reference.features)
    # A new predictor over the same folder, as a later session opens it: read, not embedded.
    later = counting(SamPredictor(model, "torch", embeddings=tmp_path / "store"))
    later.set_image(image)
    assert later.encoder_calls == 0
    again = later.embedding
    assert again.features.dtype == torch.float32 and again.features.device == later.device
    assert torch.equal(again.features, reference.features)
    assert (again.original_size, again.input_size) == (reference.original_size, reference.input_size)
    header = json.loads((tmp_path / "store" / STORE_FILE).read_text())
    assert header["model"] == "vit_t" and header["image_size"] == 256 and header["dtype"] == "float32"
    (path,) = _stored_files(tmp_path / "store")
    assert path == tmp_path / "store" / pixels_digest(image)[:2] / f"{pixels_digest(image)}.safetensors"
    _no_temporaries(tmp_path / "store")


def test_a_half_store_rounds_to_fp16_and_keeps_the_masks(model, image, reference, tmp_path):
    EmbeddingStore(tmp_path / "store", model, half=True).save(pixels_digest(image), reference)
    predictor = stored(model, tmp_path / "store")
    from_store = predictor.embed(image)
    assert predictor.encoder_calls == 0
    # Exactly fp16 rounding of the fp32 features, nothing more.
    assert torch.equal(from_store.features, reference.features.half().float())
    ious = []
    for point in POINTS:
        masks = []
        for embedding in (reference, from_store):
            predictor.set_embedding(embedding)
            mask, _, _ = predictor.predict(np.array([point]), np.array([1]), multimask_output=False)
            masks.append(mask[0])
        union = np.logical_or(*masks).sum()
        ious.append(np.logical_and(*masks).sum() / union if union else 1.0)
    print(f"fp16 store: min mask IoU against fp32 over {len(POINTS)} clicks = {min(ious):.5f}")
    assert min(ious) >= 0.99
    with pytest.raises(EmbeddingStoreError, match="holds float16, not float32"):
        EmbeddingStore(tmp_path / "store", model, half=False)


def test_the_same_pixels_under_another_name_are_found_without_the_encoder(model, image, tmp_path):
    Image.fromarray(image).save(tmp_path / "a.png")
    Image.fromarray(image).save(tmp_path / "renamed copy.png")
    predictor = stored(model, tmp_path / "store")
    first = predictor.embed(load_image(tmp_path / "a.png"))
    second = predictor.embed(load_image(tmp_path / "renamed copy.png"))
    assert predictor.encoder_calls == 1
    assert torch.equal(first.features, second.features)
    assert len(_stored_files(tmp_path / "store")) == 1


def test_another_models_store_is_refused_naming_both(model, image, reference, tmp_path):
    EmbeddingStore(tmp_path / "store", model).save(pixels_digest(image), reference)
    other = _small_model(seed=6)
    with pytest.raises(EmbeddingStoreError, match="another model or input size") as caught:
        EmbeddingStore(tmp_path / "store", other)
    ours = EmbeddingStore(tmp_path / "store", model).identity["weights_sha256"]
    theirs = EmbeddingStore(tmp_path / "other", other).identity["weights_sha256"]
    assert ours[:12] in str(caught.value) and theirs[:12] in str(caught.value)
    # A predictor of another model never reads or writes this store.
    with pytest.raises(EmbeddingStoreError, match="not the one of the embedding store"):
        SamPredictor(other, "torch", embeddings=EmbeddingStore(tmp_path / "store", model))
    # Nor does the store's own model once trained in place: its embeddings are another model's now.
    trained = _small_model(seed=5)
    predictor = SamPredictor(trained, "torch", embeddings=tmp_path / "store")
    with torch.no_grad():
        trained.mask_decoder.iou_prediction_head.layers[0].bias.add_(1.0)
    with pytest.raises(EmbeddingStoreError, match="not the one of the embedding store"):
        predictor.embed(image)


def test_a_truncated_file_is_a_clear_error_and_recompute_repairs_it(model, image, reference, tmp_path):
    EmbeddingStore(tmp_path / "store", model).save(pixels_digest(image), reference)
    (path,) = _stored_files(tmp_path / "store")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(EmbeddingStoreError, match="cannot be read") as caught:
        stored(model, tmp_path / "store").set_image(image)
    assert str(path) in str(caught.value)
    predictor = stored(model, tmp_path / "store", recompute=True)
    repaired = predictor.embed(image)
    assert predictor.encoder_calls == 1
    assert torch.equal(repaired.features, reference.features)
    assert torch.equal(EmbeddingStore(tmp_path / "store", model).load(pixels_digest(image)).features, reference.features)
    _no_temporaries(tmp_path / "store")


def test_a_corrupt_header_is_a_clear_error(model, tmp_path):
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / STORE_FILE).write_text("{not json")
    with pytest.raises(EmbeddingStoreError, match="store.json is not a readable embedding store header"):
        EmbeddingStore(tmp_path / "store", model)


def test_a_store_that_cannot_be_written_still_serves_and_warns_once(model, image, reference, tmp_path):
    other = generated_image(seed=3)
    predictor = stored(model, tmp_path / "store")
    predictor.embed(image)
    # Where the other image's file would go is a file, not a folder: every write there fails, as on a read-only mount.
    (tmp_path / "store" / pixels_digest(other)[:2]).write_bytes(b"")
    with pytest.warns(RuntimeWarning, match="cannot store new embeddings") as warned:
        first = predictor.embed(other)
        predictor.embed(other)
    assert len(warned) == 1
    assert torch.equal(first.features, SamPredictor(model, "torch").embed(other).features)
    assert predictor.encoder_calls == 3
    assert torch.equal(predictor.embed(image).features, reference.features) and predictor.encoder_calls == 3


def test_a_reduced_precision_engine_cannot_fill_a_store(model, tmp_path):
    # The store names the model, not the engine: bf16 embeddings written there would later pass for fp32's.
    with pytest.raises(EmbeddingStoreError, match=r"torch-bf16 \(bf16\) engine cannot fill the embedding store"):
        SamPredictor(model, "torch-bf16", embeddings=tmp_path / "store")
