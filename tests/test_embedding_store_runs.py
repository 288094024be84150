"""A project embedded once (`mobilesam embed`) is served by predict, everything, val, the service and `SAM`
without one more encoder run: every run here counts the encoder's calls."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from images import generated_image
from mobilesam import SAM, SamPredictor, build_sam, load_sam
from mobilesam.cli import app
from mobilesam.embedding_store import EmbeddingStore
from mobilesam.io.images import load_image, pixels_digest
from mobilesam.server import ServeSettings, create_app
from mobilesam.weights import save_checkpoint
from reference import randomize

runner = CliRunner()
SHAPES = [(20.0, 18.0, 8.0), (30.0, 44.0, 10.0)]  # discs (cy, cx, r) on each 64x48 image


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> dict[str, Path]:
    """A checkpoint, two photos with PNG ground-truth masks (val's mask folder), and their store, embedded once."""
    root = tmp_path_factory.mktemp("project")
    checkpoint = save_checkpoint(randomize(build_sam("vit_t"), seed=11), root / "random_vit_t.pt")
    photos, truth = root / "photos", root / "truth"
    photos.mkdir()
    yy, xx = np.mgrid[0:48, 0:64]
    for seed in range(2):
        image = generated_image(48, 64, seed=seed)
        for index, (cy, cx, r) in enumerate(SHAPES):
            disc = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
            image[disc] = (230, 40 + 100 * index, 40)
            (truth / f"photo{seed}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(disc.astype(np.uint8) * 255).save(truth / f"photo{seed}" / f"{index}.png")
        Image.fromarray(image).save(photos / f"photo{seed}.png")
    store = root / "store"
    command = ["embed", str(photos), "--out", str(store), "--model", str(checkpoint), "--backend", "torch"]
    embedded = runner.invoke(app, command)
    assert embedded.exit_code == 0, embedded.output
    assert "2 embedded, 0 already stored, 0 failed" in embedded.stdout
    # Resumable by the pixels: a second run finds both and embeds nothing.
    again = runner.invoke(app, command)
    assert again.exit_code == 0, again.output
    assert "0 embedded, 2 already stored, 0 failed" in again.stdout
    assert len(list(store.rglob("*.safetensors"))) == 2
    assert not list(store.rglob(".*")), "temporary files left"
    return {"checkpoint": checkpoint, "photos": photos, "truth": truth, "store": store, "root": root}


@pytest.fixture
def encoder_calls(monkeypatch) -> list[int]:
    """The images any predictor's encoder embeds from now on, whatever its engine, as one growing list."""
    calls: list[tuple[int, ...]] = []
    embed = SamPredictor._embed_resized

    def counted(self, transformed_image, original_image_size):
        calls.append(tuple(original_image_size))
        return embed(self, transformed_image, original_image_size)

    monkeypatch.setattr(SamPredictor, "_embed_resized", counted)
    return calls


def _model_options(project: dict[str, Path]) -> list[str]:
    return ["--model", str(project["checkpoint"]), "--backend", "torch", "--embeddings", str(project["store"])]


def test_predict_and_everything_read_the_store_without_the_encoder(project, encoder_calls, tmp_path):
    predicted = runner.invoke(
        app, ["predict", str(project["photos"]), "--point", "18,20", "--out", str(tmp_path / "p"), *_model_options(project)]
    )
    assert predicted.exit_code == 0, predicted.output
    assert len(list((tmp_path / "p").rglob("*.png"))) >= 2
    everything = runner.invoke(
        app,
        [
            "everything",
            str(project["photos"]),
            "--points-per-side",
            "4",
            "--out",
            str(tmp_path / "e"),
            "-f",
            "coco",
            *_model_options(project),
        ],
    )
    assert everything.exit_code == 0, everything.output
    assert encoder_calls == []


def test_val_reads_the_store_and_scores_as_without_it(project, encoder_calls, tmp_path):
    command = ["val", "--data", str(project["truth"]), "--images", str(project["photos"]), "--prompt", "box,point"]
    model = ["--model", str(project["checkpoint"]), "--backend", "torch"]
    stored = runner.invoke(
        app, [*command, "--out", str(tmp_path / "stored.json"), *model, "--embeddings", str(project["store"]), "-q"]
    )
    assert stored.exit_code == 0, stored.output
    assert encoder_calls == []
    embedded = runner.invoke(app, [*command, "--out", str(tmp_path / "embedded.json"), *model, "-q"])
    assert embedded.exit_code == 0, embedded.output
    assert len(encoder_calls) == 2
    scores = [json.loads((tmp_path / name).read_text())["protocols"] for name in ("stored.json", "embedded.json")]
    assert {name: protocol["miou"] for name, protocol in scores[0].items()} == pytest.approx(
        {name: protocol["miou"] for name, protocol in scores[1].items()}, abs=1e-6
    )


def test_the_service_answers_a_stored_upload_without_the_encoder_and_stores_new_ones(project, encoder_calls):
    model = load_sam(project["checkpoint"])
    settings = ServeSettings(embeddings=str(project["store"]))
    photo = (project["photos"] / "photo0.png").read_bytes()
    new_image = io.BytesIO()
    Image.fromarray(generated_image(40, 50, seed=9)).save(new_image, format="PNG")
    with TestClient(create_app(model, settings, backend="torch")) as client:
        uploaded = client.post("/v1/images", files={"file": ("photo0.png", photo, "image/png")})
        assert uploaded.status_code == 200, uploaded.text
        clicked = client.post(f"/v1/images/{uploaded.json()['image_id']}/segment", json={"points": [[18, 20]], "labels": [1]})
        assert clicked.status_code == 200, clicked.text
        assert encoder_calls == []
        fresh = client.post("/v1/images", files={"file": ("new.png", new_image.getvalue(), "image/png")})
        assert fresh.status_code == 200, fresh.text
    assert len(encoder_calls) == 1
    # Written back: a later session finds it.
    later = SamPredictor(model, "torch", embeddings=project["store"])
    later.set_image(generated_image(40, 50, seed=9))
    assert len(encoder_calls) == 1


def test_sam_reads_the_store(project, encoder_calls):
    model = SAM(project["checkpoint"], backend="torch", embeddings=project["store"])
    results = model.predict(str(project["photos"] / "photo1.png"), points=[44, 30], labels=[1])
    assert results[0].masks.shape[1:] == (48, 64)
    assert encoder_calls == []


def test_a_store_of_another_model_is_one_clear_error_before_any_image(project, tmp_path):
    other = save_checkpoint(randomize(build_sam("vit_t"), seed=12), tmp_path / "other.pt")
    command = ["predict", str(project["photos"]), "--point", "18,20", "--out", str(tmp_path / "p")]
    result = runner.invoke(app, [*command, "--model", str(other), "--backend", "torch", "--embeddings", str(project["store"])])
    assert result.exit_code == 1
    assert "made by another model or input size" in result.output
    assert not (tmp_path / "p").exists()
    with pytest.raises(ValueError, match="another model or input size"):
        SAM(other, backend="torch", embeddings=project["store"])
    with pytest.raises(ValueError, match="another model or input size"):
        create_app(load_sam(other), ServeSettings(embeddings=str(project["store"])), backend="torch")
    assert EmbeddingStore(project["store"], load_sam(project["checkpoint"])).dtype == "float32"


def test_tiled_embeddings_are_stored_and_read_by_a_tiled_predict(project, encoder_calls, tmp_path):
    photo = project["photos"] / "photo1.png"
    tiling = ["--tile", "48", "--halo", "8"]  # two windows across each 64x48 photo
    store = ["--out", str(tmp_path / "tiles")]
    model = ["--model", str(project["checkpoint"]), "--backend", "torch"]
    embedded = runner.invoke(app, ["embed", str(photo), *store, *model, *tiling])
    assert embedded.exit_code == 0, embedded.output
    assert "1 embedded, 0 already stored" in embedded.stdout
    assert encoder_calls == [(48, 48), (48, 48)]
    again = runner.invoke(app, ["embed", str(photo), *store, *model, *tiling])
    assert "0 embedded, 1 already stored" in again.stdout
    predicted = runner.invoke(
        app,
        ["predict", str(photo), "--point", "44,30", "--out", str(tmp_path / "p"), *model, *tiling]
        + ["--embeddings", str(tmp_path / "tiles")],
    )
    assert predicted.exit_code == 0, predicted.output
    assert len(encoder_calls) == 2
    refused = runner.invoke(app, ["embed", str(photo), *store, *model, "--halo", "8"])
    assert refused.exit_code == 2 and "--halo needs --tile" in refused.output


def test_a_damaged_file_is_named_by_predict_and_repaired_by_embed_recompute(project, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(project["store"], store)
    digest = pixels_digest(load_image(project["photos"] / "photo0.png"))
    damaged = store / digest[:2] / f"{digest}.safetensors"
    damaged.write_bytes(damaged.read_bytes()[:1000])
    model = ["--model", str(project["checkpoint"]), "--backend", "torch"]
    predicted = runner.invoke(
        app,
        ["predict", str(project["photos"]), "--point", "18,20", "-o", str(tmp_path / "p"), *model, "--embeddings", str(store)],
    )
    assert predicted.exit_code == 1
    assert f"stored embedding {damaged} cannot be read" in predicted.output
    embed = ["embed", str(project["photos"]), "--out", str(store), *model]
    assert "0 embedded, 2 already stored" in runner.invoke(app, embed).stdout  # existence only: cheap resumes
    repaired = runner.invoke(app, [*embed, "--recompute"])
    assert "1 embedded, 1 already stored" in repaired.stdout
    assert torch.equal(
        EmbeddingStore(store, load_sam(project["checkpoint"])).load(digest).features,
        EmbeddingStore(project["store"], load_sam(project["checkpoint"])).load(digest).features,
    )
