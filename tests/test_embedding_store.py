"""`EmbeddingStore` and `mobilesam embed`: embeddings kept on disk, found by pixels, refused for another model."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from images import generated_image
from mobilesam import build_sam
from mobilesam.cli import app
from mobilesam.embedding_store import STORE_FILE, EmbeddingStore, EmbeddingStoreError
from mobilesam.io.images import load_image, pixels_digest
from mobilesam.predictor import SamPredictor
from mobilesam.registry import build_from_config, get_config
from mobilesam.weights import save_checkpoint
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
def predictor(model, monkeypatch):
    """A torch predictor whose encoder runs are counted in `predictor.encoder_calls`."""
    predictor = SamPredictor(model, "torch")
    predictor.encoder_calls = 0
    embed = predictor.backend.embed

    def counted(*args, **kwargs):
        predictor.encoder_calls += 1
        return embed(*args, **kwargs)

    monkeypatch.setattr(predictor.backend, "embed", counted)
    return predictor


def _stored_files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.safetensors"))


def _no_temporaries(root: Path) -> None:
    hidden = list(root.rglob(".*"))
    assert not hidden, f"temporary files left: {hidden}"


def test_a_stored_fp32_embedding_is_the_predictors_bit_for_bit(model, image, reference, predictor, tmp_path):
    first = EmbeddingStore(tmp_path / "store", model).embedding(predictor, image)
    assert predictor.encoder_calls == 1
    assert torch.equal(first.features, reference.features)
    # A new store object over the same folder, as a later session opens it: read, not embedded.
    again = EmbeddingStore(tmp_path / "store", model).embedding(predictor, image)
    assert predictor.encoder_calls == 1
    assert again.features.dtype == torch.float32 and again.features.device == predictor.device
    assert torch.equal(again.features, reference.features)
    assert (again.original_size, again.input_size) == (reference.original_size, reference.input_size)
    header = json.loads((tmp_path / "store" / STORE_FILE).read_text())
    assert header["model"] == "vit_t" and header["image_size"] == 256 and header["dtype"] == "float32"
    (path,) = _stored_files(tmp_path / "store")
    assert path == tmp_path / "store" / pixels_digest(image)[:2] / f"{pixels_digest(image)}.safetensors"
    _no_temporaries(tmp_path / "store")


def test_a_half_store_rounds_to_fp16_and_keeps_the_masks(model, image, reference, predictor, tmp_path):
    EmbeddingStore(tmp_path / "store", model, half=True).save(pixels_digest(image), reference)
    stored = EmbeddingStore(tmp_path / "store", model).embedding(predictor, image)
    assert predictor.encoder_calls == 0
    # Exactly fp16 rounding of the fp32 features, nothing more.
    assert torch.equal(stored.features, reference.features.half().float())
    ious = []
    for point in POINTS:
        masks = []
        for embedding in (reference, stored):
            predictor.set_embedding(embedding)
            mask, _, _ = predictor.predict(np.array([point]), np.array([1]), multimask_output=False)
            masks.append(mask[0])
        union = np.logical_or(*masks).sum()
        ious.append(np.logical_and(*masks).sum() / union if union else 1.0)
    print(f"fp16 store: min mask IoU against fp32 over {len(POINTS)} clicks = {min(ious):.5f}")
    assert min(ious) >= 0.99
    with pytest.raises(EmbeddingStoreError, match="holds float16, not float32"):
        EmbeddingStore(tmp_path / "store", model, half=False)


def test_the_same_pixels_under_another_name_are_found_without_the_encoder(model, image, predictor, tmp_path):
    Image.fromarray(image).save(tmp_path / "a.png")
    Image.fromarray(image).save(tmp_path / "renamed copy.png")
    store = EmbeddingStore(tmp_path / "store", model)
    first = store.embedding(predictor, load_image(tmp_path / "a.png"))
    second = store.embedding(predictor, load_image(tmp_path / "renamed copy.png"))
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
    # A predictor of another model never writes into this store.
    with pytest.raises(EmbeddingStoreError, match="not the one of the embedding store"):
        EmbeddingStore(tmp_path / "store", model).embedding(SamPredictor(other, "torch"), image)


def test_a_truncated_file_is_a_clear_error_and_recompute_repairs_it(model, image, reference, predictor, tmp_path):
    EmbeddingStore(tmp_path / "store", model).save(pixels_digest(image), reference)
    (path,) = _stored_files(tmp_path / "store")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(EmbeddingStoreError, match="cannot be read") as caught:
        EmbeddingStore(tmp_path / "store", model).embedding(predictor, image)
    assert str(path) in str(caught.value)
    repaired = EmbeddingStore(tmp_path / "store", model, recompute=True).embedding(predictor, image)
    assert predictor.encoder_calls == 1
    assert torch.equal(repaired.features, reference.features)
    assert torch.equal(EmbeddingStore(tmp_path / "store", model).load(pixels_digest(image)).features, reference.features)
    _no_temporaries(tmp_path / "store")


def test_a_corrupt_header_is_a_clear_error(model, tmp_path):
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / STORE_FILE).write_text("{not json")
    with pytest.raises(EmbeddingStoreError, match="store.json is not a readable embedding store header"):
        EmbeddingStore(tmp_path / "store", model)


@pytest.mark.slow  # three embeddings at the CLI's 1024 pixels (a checkpoint cannot carry the small input size)
def test_the_cli_embeds_a_folder_once(tmp_path):
    checkpoint = save_checkpoint(randomize(build_sam("vit_t"), seed=3), tmp_path / "random_vit_t.pt")
    photos = tmp_path / "photos"
    photos.mkdir()
    for seed in range(3):
        Image.fromarray(generated_image(48, 64, seed=seed)).save(photos / f"image{seed}.png")
    store = tmp_path / "store"
    command = ["embed", str(photos), "--out", str(store), "--model", str(checkpoint), "--backend", "torch"]
    runner = CliRunner()
    first = runner.invoke(app, command)
    assert first.exit_code == 0, first.output
    assert "3 embedded, 0 already stored, 0 failed" in first.stdout
    assert len(_stored_files(store)) == 3
    second = runner.invoke(app, command)
    assert second.exit_code == 0, second.output
    assert "0 embedded, 3 already stored, 0 failed" in second.stdout
    assert len(_stored_files(store)) == 3
    _no_temporaries(store)
