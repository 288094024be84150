"""Clients' own code for the tests, installed from the package index once and cached.

Each client goes under ~/.cache/mobilesam-tests/clients/<name>: either
packages installed without their dependencies into a folder that runs on
this venv (for clients whose pins would clash with ours but whose code runs
on our versions), or a venv of its own with everything it asks for. A
folder is renamed into place only when its install finished, so a killed
install is redone, never used half-made.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import cv2
import pytest
import torch
from PIL import Image

CLIENT_CACHE = Path.home() / ".cache" / "mobilesam-tests" / "clients"


def installed_client(name: str, requirements: list[str], *, own_venv: bool) -> Path:
    """The folder holding client `name`, installed the first time: a `--target` folder, or a venv with `own_venv`.

    Fails the test, with pip's message, when the install fails.
    """
    home = CLIENT_CACHE / name
    if home.is_dir():
        return home
    CLIENT_CACHE.mkdir(parents=True, exist_ok=True)
    scratch = CLIENT_CACHE / f".{name}.{os.getpid()}.tmp"
    shutil.rmtree(scratch, ignore_errors=True)
    if own_venv:
        subprocess.run([sys.executable, "-m", "venv", str(scratch)], check=True)
        pip = [str(scratch / "bin" / "python"), "-m", "pip", "install"]
    else:
        pip = [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(scratch)]
    install = subprocess.run([*pip, "--quiet", *requirements], capture_output=True, text=True)
    if install.returncode != 0:
        shutil.rmtree(scratch, ignore_errors=True)
        pytest.fail(f"could not install {name} ({' '.join(requirements)}): {install.stderr[-2000:]}")
    # A venv's python still finds its packages through the pyvenv.cfg beside it once renamed
    # (only its console scripts keep the scratch path, and none is used).
    try:
        os.rename(scratch, home)
    except OSError:
        # The other test worker installed it first: keep its copy.
        if not home.is_dir():
            raise
        shutil.rmtree(scratch, ignore_errors=True)
    return home


def import_ultralytics(monkeypatch: pytest.MonkeyPatch, settings_dir: Path) -> ModuleType:
    """Ultralytics 8.4.190, installed without its dependencies (its opencv-python would sit beside our
    headless OpenCV) and imported so that what it changes on import ends with the test.

    Importing it replaces `PIL.Image.open` (with one that installs pi-heif on an unreadable file) and
    `torch.save`, and sets OpenCV's threads to 0; later tests must see none of that.
    """
    monkeypatch.syspath_prepend(str(installed_client("ultralytics-8.4.190", ["ultralytics==8.4.190"], own_venv=False)))
    monkeypatch.setenv("YOLO_CONFIG_DIR", str(settings_dir))
    monkeypatch.setattr(Image, "open", Image.open)
    monkeypatch.setattr(torch, "save", torch.save)
    threads = cv2.getNumThreads()
    try:
        return importlib.import_module("ultralytics")
    finally:
        cv2.setNumThreads(threads)
