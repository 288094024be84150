"""Checkpoints: saving, safe reading, the cache and downloads (over a local HTTP server), clear errors."""

from __future__ import annotations

import dataclasses
import functools
import http.server
import pickle
import threading
from pathlib import Path

import pytest
import torch

from mobilesam import build_sam, load_sam, sam_model_registry
from mobilesam.errors import CheckpointError, DownloadError, UnknownModelError
from mobilesam.registry import (
    MODEL_CONFIGS,
    build_from_config,
    detect_model_name,
    get_config,
    known_checkpoints,
    resolve_checkpoint,
)
from mobilesam.weights import Checkpoint, cache_dir, download, read_state_dict, save_checkpoint, sha256_file
from reference import randomize


@pytest.fixture(scope="module")
def seeded_vit_t():
    return randomize(build_sam("vit_t"), seed=3)


@pytest.fixture(scope="module")
def checkpoint_file(seeded_vit_t, tmp_path_factory) -> Path:
    return save_checkpoint(seeded_vit_t, tmp_path_factory.mktemp("ckpt") / "seeded.pt")


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("MOBILESAM_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def server(checkpoint_file):
    """A local HTTP server over the checkpoint's folder: (base URL, folder)."""
    handler = functools.partial(_QuietHandler, directory=str(checkpoint_file.parent))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", checkpoint_file.parent
    httpd.shutdown()
    httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") or p.suffix == ".tmp")


# Saving and reading


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".safetensors"])
def test_round_trip_through_every_loader(seeded_vit_t, tmp_path, suffix):
    path = save_checkpoint(seeded_vit_t, tmp_path / f"model{suffix}")
    assert _same_weights(build_sam("vit_t", checkpoint=path), seeded_vit_t)
    assert _same_weights(load_sam(path), seeded_vit_t)
    assert _same_weights(sam_model_registry["vit_t"](checkpoint=str(path)), seeded_vit_t)
    assert _leftovers(tmp_path) == []


def test_loaded_model_is_in_eval_mode_and_detected(checkpoint_file):
    model = load_sam(checkpoint_file)
    assert not model.training
    assert detect_model_name(read_state_dict(checkpoint_file)) == "vit_t"


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: {"model": sd},
        lambda sd: {"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3},
        lambda sd: {"model": {f"_orig_mod.{k}": v for k, v in sd.items()}},
    ],
    ids=["model", "state_dict+module.", "compiled"],
)
def test_trainer_wrappers_are_unwrapped(seeded_vit_t, tmp_path, wrap):
    path = tmp_path / "wrapped.pt"
    torch.save(wrap(seeded_vit_t.state_dict()), path)
    assert _same_weights(load_sam(path), seeded_vit_t)


def test_derived_attention_buffers_in_file_are_ignored(seeded_vit_t, tmp_path):
    state = dict(seeded_vit_t.state_dict())
    state["image_encoder.layers.1.blocks.0.attn.attention_bias_idxs"] = torch.zeros(49, 49, dtype=torch.long)
    path = tmp_path / "with_idxs.pt"
    torch.save(state, path)
    assert _same_weights(load_sam(path), seeded_vit_t)


def test_pickle_with_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (Path.touch, (marker,))

    path = tmp_path / "evil.pt"
    torch.save({"weights": torch.zeros(2), "payload": Exploit()}, path)
    with pytest.raises(CheckpointError, match="refusing to run pickled code"):
        load_sam(path)
    assert not marker.exists()


def test_plain_pickle_file_is_refused(tmp_path):
    path = tmp_path / "plain.pt"
    path.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(CheckpointError, match=str(path)):
        read_state_dict(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"hello, this is not a checkpoint\n", "not a readable checkpoint"),
    ],
    ids=["empty", "text"],
)
def test_unreadable_files_name_the_problem(tmp_path, content, message):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        load_sam(path)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_truncated_checkpoint_is_refused(seeded_vit_t, tmp_path, suffix):
    whole = save_checkpoint(seeded_vit_t, tmp_path / f"whole{suffix}")
    truncated = tmp_path / f"truncated{suffix}"
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_sam(truncated)


def test_file_without_tensors_is_refused(tmp_path):
    path = tmp_path / "meta.pt"
    torch.save({"epoch": 3, "lr": 0.1}, path)
    with pytest.raises(CheckpointError, match="holds no tensors"):
        load_sam(path)


def test_checkpoint_of_another_model_names_both(checkpoint_file):
    with pytest.raises(CheckpointError, match="holds a 'vit_t' model, not 'vit_b'"):
        build_sam("vit_b", checkpoint=checkpoint_file)


def test_missing_and_misshaped_tensors_are_listed(seeded_vit_t, tmp_path):
    state = dict(seeded_vit_t.state_dict())
    del state["mask_decoder.iou_token.weight"]
    state["mask_decoder.mask_tokens.weight"] = torch.zeros(5, 256)
    state["extra.weight"] = torch.zeros(1)
    path = save_checkpoint(state, tmp_path / "damaged.pt")
    with pytest.raises(CheckpointError) as err:
        load_sam(path)
    text = str(err.value)
    assert "1 missing: mask_decoder.iou_token.weight" in text
    assert "1 unexpected: extra.weight" in text
    assert "mask_decoder.mask_tokens.weight: file (5, 256) vs model (4, 256)" in text


def test_state_dict_that_is_not_sam_is_refused(tmp_path):
    path = save_checkpoint(torch.nn.Linear(2, 2), tmp_path / "linear.pt")
    with pytest.raises(CheckpointError, match="not a SAM or MobileSAM checkpoint"):
        load_sam(path)


def test_save_refuses_non_tensors(tmp_path):
    with pytest.raises(TypeError, match="these are not: bad"):
        save_checkpoint({"bad": object(), "good": torch.zeros(1)}, tmp_path / "model.pt")
    assert list(tmp_path.iterdir()) == []


def test_failed_save_keeps_the_old_file(seeded_vit_t, tmp_path, monkeypatch):
    path = save_checkpoint(seeded_vit_t, tmp_path / "model.pt")
    before = path.read_bytes()

    def disk_full(obj, f):
        Path(f).write_bytes(b"partial")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(seeded_vit_t, path)
    assert path.read_bytes() == before
    assert _leftovers(tmp_path) == []


# Names, the cache and downloads


def test_unknown_names_are_refused_clearly(home):
    with pytest.raises(UnknownModelError, match="unknown model 'vit_xl'"):
        load_sam("vit_xl")
    with pytest.raises(UnknownModelError, match="vit_t"):
        build_sam("mobile")
    with pytest.raises(FileNotFoundError, match="checkpoint not found: missing.pt"):
        load_sam("missing.pt")


def test_cache_dir_follows_environment(home):
    assert cache_dir() == home


def test_known_checkpoints_point_at_official_files():
    mobile = known_checkpoints()["mobile_sam.pt"]
    assert mobile.urls[0] == "https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt"
    assert mobile.size == 40_728_226 and get_config("vit_t").checkpoint == mobile
    for known in known_checkpoints().values():
        assert len(known.sha256) == 64 and int(known.sha256, 16) >= 0


def publish_vit_t(monkeypatch, checkpoint: Checkpoint) -> None:
    """Make `checkpoint` vit_t's published checkpoint for one test."""
    monkeypatch.setitem(MODEL_CONFIGS, "vit_t", dataclasses.replace(MODEL_CONFIGS["vit_t"], checkpoint=checkpoint))


@pytest.fixture
def served_checkpoint(server, checkpoint_file, monkeypatch) -> Checkpoint:
    """vit_t published as the seeded file, served by the local server."""
    base, _ = server
    known = Checkpoint("seeded.pt", (f"{base}/seeded.pt",), sha256_file(checkpoint_file), checkpoint_file.stat().st_size)
    publish_vit_t(monkeypatch, known)
    return known


def test_known_name_downloads_into_cache_then_works_offline(home, served_checkpoint, seeded_vit_t, monkeypatch):
    model = load_sam("seeded.pt")
    cached = home / "seeded.pt"
    assert cached.is_file() and sha256_file(cached) == served_checkpoint.sha256
    assert _same_weights(model, seeded_vit_t)
    assert _leftovers(home) == []
    # Offline now: the cached copy is used without touching the network.
    publish_vit_t(monkeypatch, Checkpoint("seeded.pt", ("http://127.0.0.1:9/x",), "0" * 64))
    assert resolve_checkpoint("seeded.pt") == cached


def test_checksum_mismatch_discards_download(home, server, monkeypatch):
    base, _ = server
    publish_vit_t(monkeypatch, Checkpoint("seeded.pt", (f"{base}/seeded.pt",), "0" * 64))
    with pytest.raises(CheckpointError, match="checksum mismatch .*the file was discarded"):
        resolve_checkpoint("seeded.pt", progress=False)
    assert not home.exists() or list(home.iterdir()) == []


def test_offline_error_names_url_and_destination(home):
    dead = "http://127.0.0.1:9/mobile_sam.pt"
    with pytest.raises(DownloadError) as err:
        resolve_checkpoint("mobile_sam.pt", urls=[dead], progress=False)
    text = str(err.value)
    assert dead in text
    assert str(home / "mobile_sam.pt") in text
    assert "ChaoningZhang/MobileSAM" in text
    assert not (home / "mobile_sam.pt").exists()


def test_no_download_when_not_allowed(home):
    with pytest.raises(DownloadError, match="not cached"):
        resolve_checkpoint("mobile_sam.pt", download_missing=False)


def test_cached_file_of_wrong_size_is_reported(home):
    home.mkdir(parents=True)
    (home / "mobile_sam.pt").write_bytes(b"partial")
    with pytest.raises(CheckpointError, match="has 7 bytes, expected 40728226"):
        resolve_checkpoint("mobile_sam.pt")


def test_download_from_file_url_checks_sha256(checkpoint_file, tmp_path):
    dest = download(checkpoint_file.as_uri(), tmp_path / "copy.pt", sha256=sha256_file(checkpoint_file), progress=False)
    assert dest.read_bytes() == checkpoint_file.read_bytes()
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        download(checkpoint_file.as_uri(), tmp_path / "other.pt", sha256="f" * 64, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy.pt"]


def test_failed_download_keeps_existing_destination(tmp_path, server):
    base, _ = server
    dest = tmp_path / "keep.pt"
    dest.write_bytes(b"old")
    with pytest.raises(DownloadError, match="404"):
        download(f"{base}/nope.pt", dest, progress=False)
    assert dest.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.pt"]


def test_model_kind_is_read_off_the_registry_for_every_model():
    # detect_model_name derives from MODEL_CONFIGS: each config's own tensors name it,
    # and a ViT with another depth than its width's config is refused.
    for name in MODEL_CONFIGS:
        with torch.device("meta"):
            state_dict = build_from_config(get_config(name)).state_dict()
        assert detect_model_name(state_dict) == name
    with torch.device("meta"):
        shallow = build_from_config(
            dataclasses.replace(get_config("vit_b"), encoder=dataclasses.replace(get_config("vit_b").encoder, depth=3))
        )
    with pytest.raises(CheckpointError, match="width 768 means vit_b with 12 blocks, but the file has 3"):
        detect_model_name(shallow.state_dict())
