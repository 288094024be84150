"""`mobilesam embed --ray`: Ray actors fill a store with the local predictor's embeddings; a rerun embeds nothing."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from images import generated_image
from mobilesam import build_sam
from mobilesam.cli import app
from mobilesam.distributed import ModelSpec, embed_on_ray
from mobilesam.distributed.embed import Embedder
from mobilesam.distributed.worker import Labeler
from mobilesam.embedding_store import STORE_FILE, EmbeddingStore, EmbeddingStoreError
from mobilesam.io.images import load_image, pixels_digest
from mobilesam.predictor import SamPredictor
from mobilesam.prompts import make_prompt
from mobilesam.tasks import PromptTask
from mobilesam.weights import save_checkpoint
from reference import randomize

ray = pytest.importorskip("ray")

runner = CliRunner()


@pytest.fixture(scope="module")
def model():
    # 1024 pixels: a checkpoint cannot carry a smaller input size, and the actors load a checkpoint.
    return randomize(build_sam("vit_t"), seed=7)


@pytest.fixture(scope="module")
def checkpoint(model, tmp_path_factory) -> Path:
    return save_checkpoint(model, tmp_path_factory.mktemp("weights") / "random_vit_t.pt")


@pytest.fixture(scope="module")
def cluster():
    """One node with one CPU: one actor, the cheapest real Ray run."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.wait_for_nodes()
        yield cluster
    finally:
        cluster.shutdown()


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Two small generated images and a file that is no image."""
    root = tmp_path_factory.mktemp("photos")
    for seed in range(2):
        Image.fromarray(generated_image(48, 64, seed=seed)).save(root / f"image{seed}.png")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return root


def _stored_files(store: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(store.rglob("*.safetensors"))}


@pytest.mark.slow  # a Ray node and two actors, each loading the 1024-pixel model
def test_ray_actors_store_the_local_predictors_embeddings_and_a_rerun_embeds_nothing(
    model, checkpoint, cluster, photos, tmp_path, one_thread
):
    store = tmp_path / "store"
    command = ["embed", str(photos), "--out", str(store), "--model", str(checkpoint), "--backend", "torch"]
    first = runner.invoke(app, [*command, "--ray", cluster.address])
    assert first.exit_code == 1, first.output  # the broken image
    assert f"2 embedded, 0 already stored, 1 failed; store in {store}; torch on 1 Ray workers" in first.stdout
    assert f"failed: {photos / 'broken.jpg'}: cannot read image" in first.output

    # Exactly what this process's torch predictor makes, on one thread as the actor ran.
    local = SamPredictor(model, "torch")
    stored = EmbeddingStore(store, model)
    for name in ("image0.png", "image1.png"):
        rgb = load_image(photos / name)
        expected, got = local.embed(rgb), stored.load(pixels_digest(rgb))
        assert torch.equal(got.features, expected.features)
        assert (got.original_size, got.input_size) == (expected.original_size, expected.input_size)
    files = _stored_files(store)
    assert len(files) == 2

    # The Python function, as a rerun: everything stored, nothing rewritten.
    summary = embed_on_ray(photos, store, ModelSpec(str(checkpoint), "torch"), address=cluster.address, progress=False)
    assert (summary.total, summary.embedded, summary.stored, summary.workers, summary.backends) == (3, 0, 2, 1, ["torch"])
    assert [image for image, _ in summary.failures] == [str(photos / "broken.jpg")]
    assert _stored_files(store) == files
    assert not list(store.rglob("*.tmp*"))


def test_a_store_of_another_model_fails_before_ray_starts(model, checkpoint, photos, tmp_path):
    store = tmp_path / "store"
    EmbeddingStore(store, randomize(build_sam("vit_t"), seed=8))
    spec = ModelSpec(str(checkpoint), "torch")
    with pytest.raises(EmbeddingStoreError, match="made by another model"):
        embed_on_ray(photos, store, spec, progress=False)
    EmbeddingStore(tmp_path / "fp32", model)
    with pytest.raises(EmbeddingStoreError, match="holds float32, not float16"):
        embed_on_ray(photos, tmp_path / "fp32", spec, half=True, progress=False)
    assert not ray.is_initialized()
    assert sorted(path.name for path in store.iterdir()) == [STORE_FILE]


def test_worker_options_without_ray_are_usage_errors(photos, tmp_path):
    result = runner.invoke(app, ["embed", str(photos), "--out", str(tmp_path / "store"), "--workers", "2"])
    assert result.exit_code == 2, result.output
    assert "are for --ray runs" in result.output
    assert not (tmp_path / "store").exists()


def test_an_actor_stores_each_window_of_a_tiled_image_once(model, checkpoint, photos, tmp_path):
    """The actor's own code, called as Ray calls it on a batch: with a tiling it stores every window."""
    store = tmp_path / "store"
    spec = ModelSpec(str(checkpoint), "torch", embeddings=str(store))
    EmbeddingStore(store, model)  # as the driver creates it
    embedder = Embedder(spec, max_pixels=10**6, tile_shape=48, halo=8)  # two windows across each 64x48 image
    batch = {"index": np.array([0]), "image": np.array([str(photos / "image0.png")], dtype=object)}
    assert list(embedder(batch)["outcome"]) == ["embedded"]
    rgb = load_image(photos / "image0.png")
    digests = {pixels_digest(rgb[:, x : x + 48]) for x in (0, 16)}
    assert set(_stored_files(store)) == {f"{digest}.safetensors" for digest in digests}
    assert list(embedder(batch)["outcome"]) == ["stored"]
    with pytest.raises(ValueError, match="halo 8 needs a tile_shape"):
        embed_on_ray(photos, store, spec, halo=8)


def test_a_labeling_actor_reads_the_store_instead_of_embedding(model, checkpoint, photos, tmp_path, monkeypatch):
    """`predict --ray --embeddings`: each actor's own code, called as Ray calls it, finds the image in the store."""
    store = tmp_path / "store"
    spec = ModelSpec(str(checkpoint), "torch", embeddings=str(store))
    EmbeddingStore(store, model)
    image = str(photos / "image1.png")
    Embedder(spec, max_pixels=10**6)({"index": np.array([0]), "image": np.array([image], dtype=object)})
    calls = []
    embed = SamPredictor._embed_resized
    monkeypatch.setattr(SamPredictor, "_embed_resized", lambda self, *args: calls.append(1) or embed(self, *args))
    labeler = Labeler(PromptTask((make_prompt([[20, 20]], [1]),)), spec, str(tmp_path / "out"), ["png"], 10**6)
    batch = {
        "index": np.array([0]),
        "image": np.array([image], dtype=object),
        "stem": np.array(["image1"], dtype=object),
        "objects": np.array([pickle.dumps(None)], dtype=object),
    }
    assert list(labeler(batch)["masks"]) == [1]
    assert calls == []
    assert (tmp_path / "out" / "masks" / "image1" / "000.png").is_file()
