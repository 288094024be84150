"""`mobilesam predict/everything --ray` on a real Ray cluster on loopback: a head and a second node, one CPU each."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from images import generated_image, sample_images
from mobilesam import build_sam
from mobilesam.cli import app
from mobilesam.distributed import find_images, label
from mobilesam.io.sources import find_jobs
from mobilesam.labeling import RunOptions
from mobilesam.prompts import make_prompt
from mobilesam.tasks import EverythingTask, PromptTask
from mobilesam.weights import save_checkpoint
from reference import randomize

ray = pytest.importorskip("ray")

runner = CliRunner()
ALL_FORMATS = ["--format", "png,overlay,coco,yolo,labelme"]
# Small grids and loose filters, so that `everything` keeps a few masks of a random model.
EVERYTHING = ["--points-per-side", "3", "--pred-iou-thresh", "0.5", "--stability-score-thresh", "0.2", "--box-nms-thresh", "1.0"]
# Ray names each actor's process after the operator it runs.
ACTOR_TITLE = b"MapBatches(Labeler)"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    # tests/test_cli_batch.py's weights: in one session both find the same graphs in the export cache.
    return save_checkpoint(randomize(build_sam("vit_t"), seed=3), tmp_path_factory.mktemp("weights") / "random_vit_t.pt")


@pytest.fixture(scope="module")
def cluster():
    """A head and a worker node, one CPU each, so that the two actors of a run land on different nodes."""
    from ray.cluster_utils import Cluster

    # The nodes inherit this process's environment, MOBILESAM_HOME included: both share one export cache.
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        yield cluster
    finally:
        cluster.shutdown()


@pytest.fixture
def photos(tmp_path) -> Path:
    """Two real photos (one in a subfolder, one JPEG), a generated image and a file that is no image."""
    root = tmp_path / "photos"
    (root / "cats").mkdir(parents=True)
    Image.fromarray(sample_images()["astronaut"][::4, ::4]).save(root / "astronaut.png")
    Image.fromarray(sample_images()["chelsea"][::3, ::3]).save(root / "cats" / "chelsea.jpg", quality=95)
    Image.fromarray(generated_image()).save(root / "generated.png")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return root


def _batch(tmp_path: Path, count: int, height: int = 90, width: int = 120) -> tuple[Path, list[str]]:
    """`count` generated images in a folder, and their stems."""
    photos = tmp_path / "batch"
    photos.mkdir()
    stems = [f"image_{i:02d}" for i in range(count)]
    for i, stem in enumerate(stems):
        Image.fromarray(generated_image(height, width, seed=i)).save(photos / f"{stem}.png")
    return photos, stems


def _tree(root: Path) -> dict[str, bytes]:
    """Every file under `root` (hidden ones too) by relative path, with its bytes."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _expected_files(stems: list[str]) -> set[str]:
    files = {"coco.json"}
    for stem in stems:
        files |= {
            f"masks/{stem}/000.png",
            f"overlays/{stem}.jpg",
            f"coco/{stem}.json",
            f"labels/{stem}.txt",
            f"labelme/{stem}.json",
        }
    return files


def _assert_complete(out: Path, stems: list[str]) -> None:
    """Each image's outputs exist once and parse; nothing else, no temporaries or locks, is left in `out`."""
    tree = _tree(out)
    assert set(tree) == _expected_files(stems)
    for name in tree:
        if name.endswith((".png", ".jpg")):
            Image.open(out / name).load()
        elif name.endswith(".json"):
            json.loads(tree[name])
    coco = json.loads(tree["coco.json"])
    assert sorted(image["file_name"] for image in coco["images"]) == [f"{stem}.png" for stem in stems]


def _actor_pids() -> list[int]:
    """The pids of this test session's actors (its MOBILESAM_HOME is in their environment), not another session's."""
    ours = b"MOBILESAM_HOME=" + os.environ["MOBILESAM_HOME"].encode() + b"\0"
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if (
                entry.name.isdigit()
                and ACTOR_TITLE in (entry / "cmdline").read_bytes()
                and ours in (entry / "environ").read_bytes()
            ):
                pids.append(int(entry.name))
        except OSError:
            continue  # the process ended while we looked
    return pids


@pytest.mark.slow
def test_a_ray_run_writes_the_local_runs_files(checkpoint, cluster, photos, tmp_path, one_thread):
    command = ["predict", str(photos), "-m", str(checkpoint), "-p", "60,40", *ALL_FORMATS]
    # One thread, as each actor has: the engines' numerics may depend on it.
    local = runner.invoke(app, [*command, "-o", str(tmp_path / "local"), "--threads", "1"])
    distributed = runner.invoke(app, [*command, "-o", str(tmp_path / "ray"), "--ray", cluster.address])

    for result in (local, distributed):
        assert result.exit_code == 1, result.output  # the broken image
        assert "4 images: 3 written, 0 already done, 1 failed; 3 masks" in result.output
        assert f"failed: {photos / 'broken.jpg'}: cannot read image" in result.output
    assert "on 2 Ray workers" in distributed.output
    assert _tree(tmp_path / "ray") == _tree(tmp_path / "local")
    assert {"coco.json", "masks/cats/chelsea/000.png", "labelme/cats/chelsea.json"} <= set(_tree(tmp_path / "ray"))

    # A rerun has nothing left but the broken image.
    again = runner.invoke(app, [*command, "-o", str(tmp_path / "ray"), "--ray", cluster.address])
    assert "4 images: 0 written, 3 already done, 1 failed" in again.output


@pytest.mark.slow
def test_everything_on_ray_from_a_uri_writes_the_local_runs_files(checkpoint, cluster, photos, tmp_path, one_thread):
    (photos / "broken.jpg").unlink()
    formats = ["--format", "png,coco"]
    options = ["-m", str(checkpoint), *formats, *EVERYTHING]
    local = runner.invoke(app, ["everything", str(photos), *options, "-o", str(tmp_path / "local"), "--threads", "1"])
    distributed = runner.invoke(
        app, ["everything", photos.as_uri(), *options, "-o", str(tmp_path / "ray"), "--ray", cluster.address]
    )
    assert local.exit_code == 0, local.output
    assert distributed.exit_code == 0, distributed.output
    tree = _tree(tmp_path / "ray")
    assert tree == _tree(tmp_path / "local")
    assert len(json.loads(tree["coco.json"])["annotations"]) > 3


@pytest.mark.slow
def test_an_actor_killed_mid_run_is_replaced_and_every_image_is_written_once(checkpoint, cluster, tmp_path):
    # Large enough that writing an image's outputs takes a while: a kill can catch an actor mid-write.
    photos, stems = _batch(tmp_path, 8, height=480, width=640)
    out = tmp_path / "out"
    killed: list[int] = []
    watcher = threading.Thread(target=_kill_an_actor_while_it_writes, args=(out, killed), daemon=True)
    watcher.start()
    task = PromptTask((make_prompt([[50, 40]], [1]),))
    options = RunOptions(
        formats=("png", "overlay", "coco", "yolo", "labelme"),
        model=checkpoint,
        address=cluster.address,
        workers=2,
        progress=False,
    )
    summary = label(photos, task, out, options)
    watcher.join()
    assert killed, "no actor was killed"
    assert (summary.written, summary.skipped, summary.failures, summary.workers) == (8, 0, [], 2)
    _assert_complete(out, stems)


def _kill_an_actor_while_it_writes(out: Path, killed: list[int]) -> None:
    """SIGKILL an actor once the first image is done, at a moment when it has a temporary file in `out` if we can.

    A temporary seen may be renamed a moment later, so the actor is frozen
    (SIGSTOP) and killed only if one is still there, else let go on. If none is
    caught within 3 s, an actor is killed anyway, still mid-run.
    """
    deadline = time.monotonic() + 120
    while not list(out.glob("labelme/*.json")) and time.monotonic() < deadline:
        time.sleep(0.01)
    pids = _actor_pids()
    anyway = time.monotonic() + 3
    while not killed and time.monotonic() < deadline:
        for pid in pids:
            if _temporaries_of(pid, out) or time.monotonic() > anyway:
                os.kill(pid, signal.SIGSTOP)
                if _temporaries_of(pid, out) or time.monotonic() > anyway:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    break
                os.kill(pid, signal.SIGCONT)


def _temporaries_of(pid: int, out: Path) -> list[Path]:
    return list(out.rglob(f".*.{pid}.*.tmp*"))


@pytest.mark.slow
def test_a_rerun_after_the_driver_is_killed_does_only_the_rest(checkpoint, cluster, tmp_path):
    photos, stems = _batch(tmp_path, 6)
    prompts = photos / "prompts.csv"  # each image its own point
    prompts.write_text("image,x,y\n" + "".join(f"{stem}.png,{40 + i},{30 + i}\n" for i, stem in enumerate(stems)))
    out = tmp_path / "out"
    command = ["predict", str(prompts), "-m", str(checkpoint), "-o", str(out), *ALL_FORMATS, "--ray", cluster.address]
    driver = subprocess.Popen([sys.executable, "-c", "from mobilesam.cli import run; run()", *command])
    deadline = time.monotonic() + 120
    # LabelMe is the last format written: its file means an image is done.
    while not list(out.glob("labelme/*.json")) and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    driver.kill()
    driver.wait(timeout=30)
    assert driver.returncode == -signal.SIGKILL

    rerun = runner.invoke(app, command)
    assert rerun.exit_code == 0, rerun.output
    written, done = map(int, re.search(r"6 images: (\d+) written, (\d+) already done, 0 failed", rerun.output).groups())
    assert written >= 1 and done >= 1 and written + done == 6
    _assert_complete(out, stems)
    [annotation] = json.loads((out / "coco" / "image_05.json").read_text())["annotations"]
    assert annotation["prompt"] == {"points": [[45.0, 35.0]], "labels": [1]}
    again = runner.invoke(app, command)
    assert "6 images: 0 written, 6 already done, 0 failed" in again.output


def test_ray_options_without_ray_or_with_threads_are_usage_errors(tmp_path):
    image = tmp_path / "image.png"
    Image.fromarray(generated_image(40, 50)).save(image)
    for extra, message in [
        (["--workers", "2"], "are for --ray runs"),
        (["--gpus-per-worker", "0.5"], "are for --ray runs"),
        (["--ray", "local", "--threads", "2"], "with --ray, give --threads-per-worker"),
    ]:
        result = runner.invoke(app, ["predict", str(image), "-p", "10,10", "-o", str(tmp_path / "out"), *extra])
        assert result.exit_code == 2, result.output
        assert message in result.output


def test_gpus_per_worker_need_the_cuda_device(tmp_path):
    with pytest.raises(ValueError, match="need the CUDA device"):
        label(tmp_path, EverythingTask(), tmp_path / "out", RunOptions(gpus_per_worker=0.5))
    with pytest.raises(ValueError, match="needs GPUs per worker"):
        label(tmp_path, EverythingTask(), tmp_path / "out", RunOptions(device="cuda"))


def test_a_uri_folder_gives_the_local_runs_stems(photos):
    refs = find_images(photos.as_uri())
    jobs = find_jobs(photos)
    assert [ref.stem for ref in refs] == [job.stem for job in jobs] == ["astronaut", "broken", "cats/chelsea", "generated"]
    assert [ref.image for ref in refs] == [job.path.as_uri() for job in jobs]
    assert [ref.stem for ref in find_images((photos / "cats" / "chelsea.jpg").as_uri())] == ["chelsea"]


def test_without_ray_the_error_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ImportError, match=r"pip install 'mobilesam\[ray\]'"):
        label(tmp_path, EverythingTask(), tmp_path / "out")
