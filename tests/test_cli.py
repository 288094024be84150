"""The `mobilesam` command: models, download, info; one-line errors."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from mobilesam import build_sam
from mobilesam.backends import BACKEND_SPECS, auto_backend_name
from mobilesam.cli import app
from mobilesam.registry import MODEL_CONFIGS
from mobilesam.weights import save_checkpoint, sha256_file
from reference import randomize

runner = CliRunner()


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("MOBILESAM_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_models_lists_every_model_with_exact_parameter_counts(home):
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.output.splitlines()[1:-1]}
    assert set(lines) == {"vit_t", "vit_b", "vit_l", "vit_h"}
    assert "mobile_sam.pt" in lines["vit_t"] and "no" in lines["vit_t"].split()
    total = int(lines["vit_t"].split()[2].replace(",", ""))
    assert total == sum(p.numel() for p in build_sam("vit_t").parameters())
    assert str(home) in result.output


def test_models_shows_cached_checkpoint(home):
    home.mkdir(parents=True)
    (home / "mobile_sam.pt").write_bytes(b"x")
    result = runner.invoke(app, ["models"])
    assert "mobile_sam.pt          yes" in result.output


def test_info_describes_a_checkpoint(tmp_path):
    path = save_checkpoint(randomize(build_sam("vit_t"), seed=1), tmp_path / "model.pt")
    result = runner.invoke(app, ["info", str(path)])
    assert result.exit_code == 0, result.output
    assert f"sha256:     {sha256_file(path)}" in result.output
    assert "model:      vit_t" in result.output
    assert f"backend:    auto is {BACKEND_SPECS[auto_backend_name()].label} on this machine" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["info", "nowhere.pt"], "checkpoint not found: nowhere.pt"),
        (["download", "vit_xl"], "unknown model 'vit_xl'"),
    ],
)
def test_errors_are_one_line_without_traceback(home, args, message):
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert message in result.output
    assert "Traceback" not in result.output


def test_info_on_a_text_file_says_so(tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("not weights")
    result = runner.invoke(app, ["info", str(path)])
    assert result.exit_code == 1 and "not a readable checkpoint" in result.output


def test_download_offline_says_where_to_put_the_file(home, monkeypatch):
    dead = "http://127.0.0.1:9/mobile_sam.pt"  # the discard port: nothing listens
    vit_t = MODEL_CONFIGS["vit_t"]
    offline = dataclasses.replace(vit_t, checkpoint=dataclasses.replace(vit_t.checkpoint, urls=(dead,)))
    monkeypatch.setitem(MODEL_CONFIGS, "vit_t", offline)
    result = runner.invoke(app, ["download", "vit_t"])
    assert result.exit_code == 1
    assert dead in result.output
    assert str(home / "mobile_sam.pt") in result.output
    assert not (home / "mobile_sam.pt").exists()


def test_verbose_shows_the_traceback():
    result = runner.invoke(app, ["--verbose", "info", "nowhere.pt"])
    assert result.exit_code != 0
    assert isinstance(result.exception, FileNotFoundError)


def test_console_script_runs():
    completed = subprocess.run(
        [sys.executable, "-c", "from mobilesam.cli import run; run()", "--help"], capture_output=True, text=True, check=False
    )
    assert completed.returncode == 0
    assert "models" in completed.stdout and "download" in completed.stdout


def test_serve_checks_the_backend_before_loading_the_model(home):
    result = runner.invoke(app, ["serve", "--model", "no_such.pt", "--backend", "torch", "--onnx-dir", "onnx"])
    assert result.exit_code == 2
    assert result.output.strip() == "error: --onnx-dir is for the onnx/openvino backends; --backend torch runs torch"
    result = runner.invoke(app, ["serve", "--model", "no_such.pt", "--backend", "tensorrt"])
    assert result.exit_code == 2 and "--backend must be auto or one of torch, torch-fast" in result.output
