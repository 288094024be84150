"""`mobilesam train`: teacher cache, distillation (exact resume, torchrun), decoder fine-tuning.

Everything runs at a 64-pixel input with a shrunken random teacher and, where
the test is about training dynamics, a shrunken student, to stay fast on CPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from typer.testing import CliRunner

from images import generated_image
from mobilesam import SAM
from mobilesam.cli import app
from mobilesam.registry import build_from_config
from mobilesam.train.config import model_config
from mobilesam.train.data import BatchPlan
from mobilesam.weights import read_state_dict, save_checkpoint

runner = CliRunner()
SIZE = 64
TEACHER = {"embed_dim": 32, "depth": 1, "num_heads": 2, "global_attn_indexes": [0]}
SMALL_STUDENT = {"embed_dims": [16, 32, 32, 64], "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 2], "window_sizes": [2, 2, 2, 2]}
DISTILL_FLAGS = [
    "--steps",
    "40",
    "--batch-size",
    "2",
    "--lr",
    "3e-3",
    "--warmup-steps",
    "5",
    "--workers",
    "0",
    "--log-every",
    "5",
    "--no-tensorboard",
    "-q",
]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models train faster on one thread, and the runs must use the same count to compare bit for bit."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _yaml(path: Path, settings: dict) -> Path:
    path.write_text(json.dumps(settings))  # JSON is YAML
    return path


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """Six generated images, a random shrunken ViT teacher saved as a SAM checkpoint, its config, and its cache."""
    root = tmp_path_factory.mktemp("train")
    (root / "images" / "sub").mkdir(parents=True)
    for i in range(6):
        folder = root / "images" / ("sub" if i % 2 else "")
        Image.fromarray(generated_image(40 + 8 * i, 64, seed=i)).save(folder / f"img{i}.png")
    torch.manual_seed(0)
    save_checkpoint(build_from_config(model_config("vit_b", TEACHER, SIZE)), root / "teacher.pt")
    _yaml(
        root / "teacher.yaml",
        {"teacher": "vit_b", "teacher_overrides": TEACHER, "image_size": SIZE, "flips": True, "shard_size": 4},
    )
    return root


def _cache(workspace: Path) -> Path:
    cache = workspace / "cache"
    if not (cache / "index.json").is_file():
        result = runner.invoke(app, _cache_args(workspace))
        assert result.exit_code == 0, result.output
    return cache


def _cache_args(workspace: Path) -> list[str]:
    return [
        "train",
        "cache-teacher",
        "--config",
        str(workspace / "teacher.yaml"),
        "--images",
        str(workspace / "images"),
        "--teacher-weights",
        str(workspace / "teacher.pt"),
        "--out",
        str(workspace / "cache"),
        "-q",
    ]


def test_cache_teacher_writes_shards_and_a_rerun_does_nothing(workspace):
    cache = _cache(workspace)
    index = json.loads((cache / "index.json").read_text())
    assert len(index["entries"]) == 12 and index["shards"] == 3  # 6 images, each also flipped
    shard = np.load(cache / "shards" / "00000.npy")
    assert shard.dtype == np.float16 and shard.shape == (4, 256, SIZE // 16, SIZE // 16)
    assert not list(cache.rglob(".*.tmp*"))
    before = {p: p.stat().st_mtime_ns for p in (cache / "shards").iterdir()}
    result = runner.invoke(app, _cache_args(workspace))
    assert result.exit_code == 0, result.output
    assert "0 computed, 12 already cached" in result.output
    assert {p: p.stat().st_mtime_ns for p in (cache / "shards").iterdir()} == before


def test_cache_teacher_refuses_a_cache_made_with_other_settings(workspace):
    _cache(workspace)
    result = runner.invoke(app, [*_cache_args(workspace), "--image-size", "32"])
    assert result.exit_code == 2
    assert "other settings" in result.output and "image_size" in result.output


def test_batch_plan_splits_ranks_and_epochs_deterministically():
    plan = BatchPlan(num_items=10, batch_size=2, world_size=2, seed=3)
    assert plan.batches_per_epoch == 2
    epoch0 = [i for k in range(2) for r in range(2) for i in plan.indices(k, r)]
    assert len(set(epoch0)) == 8  # ranks and micro-batches never repeat an item within an epoch
    assert plan.position(5) == (2, 1)
    assert plan.indices(5, 1) == BatchPlan(10, 2, 2, 3).indices(5, 1)
    assert plan.indices(0, 0) != plan.indices(2, 0)  # each epoch has its own order


def _distill(workspace: Path, out: Path, *extra: str) -> None:
    config = _yaml(workspace / "student.yaml", {"student": "vit_t", "student_overrides": SMALL_STUDENT, "seed": 1})
    result = runner.invoke(
        app,
        [
            "train",
            "distill",
            "--cache",
            str(_cache(workspace)),
            "--out",
            str(out),
            "--config",
            str(config),
            *DISTILL_FLAGS,
            *extra,
        ],
    )
    assert result.exit_code == 0, result.output


@pytest.mark.slow
def test_distill_lowers_the_loss_and_resume_is_exact(workspace, tmp_path):
    _distill(workspace, tmp_path / "straight")
    mse = [float(row.split(",")[3]) for row in (tmp_path / "straight" / "metrics.csv").read_text().splitlines()[1:]]
    assert len(mse) == 8 and mse[-1] < 0.5 * mse[0]

    _distill(workspace, tmp_path / "resumed", "--max-steps", "20")
    assert not (tmp_path / "resumed" / "mobile_sam.pt").exists()
    state = torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)
    assert state["step"] == 20 and state["data"] == {"epoch": 3, "index": 2, "micro_batch": 20}  # 12 entries, 6 batches an epoch
    result = runner.invoke(app, ["train", "distill", "--out", str(tmp_path / "resumed"), "--resume", "-q"])
    assert result.exit_code == 0, result.output
    assert "step 40/40" in result.output

    straight = read_state_dict(tmp_path / "straight" / "mobile_sam.pt")
    resumed = read_state_dict(tmp_path / "resumed" / "mobile_sam.pt")
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    straight_state = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)
    resumed_state = torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)
    assert all(torch.equal(straight_state["model"][k], resumed_state["model"][k]) for k in straight_state["model"])
    assert straight_state["optimizer"]["state"].keys() == resumed_state["optimizer"]["state"].keys()
    for key, value in straight_state["optimizer"]["state"].items():
        assert all(torch.equal(value[name], resumed_state["optimizer"]["state"][key][name]) for name in value)
    # The resumed run logs the same values (all but the speed column) as the uninterrupted one.
    rows = [(tmp_path / run / "metrics.csv").read_text().splitlines() for run in ("straight", "resumed")]
    assert [r.rsplit(",", 1)[0] for r in rows[0]] == [r.rsplit(",", 1)[0] for r in rows[1]]
    # The final model takes the teacher's prompt encoder and decoder unchanged.
    teacher = read_state_dict(workspace / "teacher.pt")
    assert torch.equal(
        straight["mask_decoder.iou_prediction_head.layers.0.weight"], teacher["mask_decoder.iou_prediction_head.layers.0.weight"]
    )


@pytest.mark.slow
def test_distilled_vit_t_loads_with_sam_and_predicts(workspace, tmp_path):
    out = tmp_path / "run"
    # The command as a user runs it, in its own process: a DataLoader with workers leaves torch's
    # SIGCHLD handler installed in the process that ran it, and in the test process (after Ray's
    # tests) the next child's exit then crashed pytest with SIGSEGV.
    command = [
        str(Path(sys.executable).with_name("mobilesam")),
        "train",
        "distill",
        "--cache",
        str(_cache(workspace)),
        "--out",
        str(out),
        "--steps",
        "2",
        "--batch-size",
        "2",
        "--workers",
        "1",
        "--log-every",
        "1",
        "-q",
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (out / "config.yaml").is_file() and list((out / "tensorboard").iterdir())
    model = SAM(out / "mobile_sam.pt")  # the real vit_t at 1024: parameter shapes do not depend on the input size
    results = model.predict(generated_image(48, 64, seed=9), points=[[20, 20]], labels=[1])
    assert results[0].masks.data.shape[-2:] == (48, 64)


def test_distill_errors_are_one_line(workspace, tmp_path):
    result = runner.invoke(app, ["train", "distill", "--cache", str(tmp_path / "nowhere"), "--out", str(tmp_path / "run")])
    assert result.exit_code == 1 and "no finished teacher cache" in result.output
    assert len(result.output.strip().splitlines()) == 1
    bad = _yaml(tmp_path / "bad.yaml", {"learning_rate": 1})
    result = runner.invoke(
        app, ["train", "distill", "--cache", str(_cache(workspace)), "--out", str(tmp_path / "run"), "--config", str(bad)]
    )
    assert result.exit_code == 2 and "unknown setting learning_rate" in result.output
    result = runner.invoke(app, ["train", "distill", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "cache is required" in result.output


@pytest.mark.slow
def test_torchrun_two_ranks_end_with_identical_weights(workspace, tmp_path):
    out = tmp_path / "ddp"
    config = _yaml(tmp_path / "student.yaml", {"student": "vit_t", "student_overrides": SMALL_STUDENT})
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(Path(sys.executable).parent / "mobilesam"),
        "train",
        "distill",
        "--cache",
        str(_cache(workspace)),
        "--out",
        str(out),
        "--config",
        str(config),
        "--steps",
        "3",
        "--batch-size",
        "2",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--no-tensorboard",
        "-q",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["step"] == 3 and len(summary["weights_digest"]) == 2
    assert summary["weights_digest"][0] == summary["weights_digest"][1]
    assert done.stdout.count("step 3/3") == 1  # only rank 0 reports


def _sa1b(root: Path) -> Path:
    """Three images in SA-1B's layout: one JSON per image with COCO RLE masks."""
    folder = root / "sa1b"
    folder.mkdir()
    rng = np.random.default_rng(0)
    h, w = 56, 64
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(3):
        Image.fromarray(generated_image(h, w, seed=10 + i)).save(folder / f"sa_{i}.jpg")
        annotations = []
        for k in range(3):
            cy, cx, r = rng.uniform(12, h - 12), rng.uniform(12, w - 12), rng.uniform(6, 12)
            rle = mask_utils.encode(np.asfortranarray(((yy - cy) ** 2 + (xx - cx) ** 2 < r**2).astype(np.uint8)))
            annotations.append({"id": k, "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()}})
        document = {"image": {"image_id": i, "file_name": f"sa_{i}.jpg", "height": h, "width": w}, "annotations": annotations}
        (folder / f"sa_{i}.json").write_text(json.dumps(document))
    return folder


@pytest.mark.slow
def test_finetune_decoder_lowers_the_loss(workspace, tmp_path):
    torch.manual_seed(2)
    model = save_checkpoint(build_from_config(model_config("vit_t", SMALL_STUDENT, SIZE)), tmp_path / "small.pt")
    config = _yaml(tmp_path / "ft.yaml", {"model_name": "vit_t", "model_overrides": SMALL_STUDENT, "masks_per_image": 3})
    out = tmp_path / "ft"
    result = runner.invoke(
        app,
        [
            "train",
            "finetune-decoder",
            "--data",
            str(_sa1b(tmp_path)),
            "--model",
            str(model),
            "--out",
            str(out),
            "--config",
            str(config),
            "--image-size",
            str(SIZE),
            "--steps",
            "12",
            "--batch-size",
            "2",
            "--iterations",
            "2",
            "--lr",
            "1e-3",
            "--warmup-steps",
            "2",
            "--workers",
            "0",
            "--log-every",
            "2",
            "--no-tensorboard",
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    loss = [float(row.split(",")[3]) for row in (out / "metrics.csv").read_text().splitlines()[1:]]
    assert loss[-1] < 0.7 * loss[0]
    tuned = read_state_dict(out / "mobile_sam.pt")
    start = read_state_dict(model)
    assert torch.equal(tuned["image_encoder.patch_embed.seq.0.c.weight"], start["image_encoder.patch_embed.seq.0.c.weight"])
    assert not torch.equal(tuned["mask_decoder.iou_token.weight"], start["mask_decoder.iou_token.weight"])
