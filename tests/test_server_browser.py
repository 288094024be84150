"""The click-to-segment page in a real browser against `mobilesam serve`.

Runs Debian's Chromium (`apt-get install chromium`) through Playwright,
headless. Without it the test is skipped, unless MOBILESAM_REQUIRE_BROWSER=1
(as `.ci/run` sets), where a missing browser is a failure.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from images import sample_images
from mobilesam import build_sam
from mobilesam.weights import save_checkpoint
from reference import randomize

# Without the network flags Chromium keeps trying to reach Google's hosts, which this closed network refuses.
_CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
REQUIRED = os.environ.get("MOBILESAM_REQUIRE_BROWSER") == "1"


def _require(condition: bool, reason: str) -> None:
    if not condition:
        if REQUIRED:
            pytest.fail(f"{reason} (MOBILESAM_REQUIRE_BROWSER=1)")
        pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    """`mobilesam serve` with a seeded random-weight checkpoint on a free loopback port; its URL."""
    checkpoint = save_checkpoint(randomize(build_sam("vit_t"), seed=3), tmp_path / "random_vit_t.pt")
    port = _free_port()
    log = (tmp_path / "serve.log").open("w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from mobilesam.cli import run; run()",
            "serve",
            "--model",
            str(checkpoint),
            "--port",
            str(port),
            "--threads",
            "2",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                pytest.fail(f"mobilesam serve exited with {process.returncode}: {(tmp_path / 'serve.log').read_text()}")
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("mobilesam serve did not answer /healthz within 60 s")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()


def test_click_to_segment_page(server, tmp_path):
    _require(CHROMIUM.exists(), f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _require(False, "playwright is not installed (pip install -e '.[dev]')")
    photo = tmp_path / "astronaut.png"
    Image.fromarray(sample_images()["astronaut"]).save(photo)  # 512 x 512

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=_CHROMIUM_FLAGS, headless=True)
        try:
            # Short enough that the 512-pixel image is shown scaled down.
            page = browser.new_page(viewport={"width": 900, "height": 560})
            page_errors: list[str] = []
            page.on("pageerror", lambda error: page_errors.append(str(error)))
            page.goto(server)
            page.set_input_files("#file", str(photo))
            page.wait_for_function("document.getElementById('status').textContent.startsWith('Ready')", timeout=60_000)

            canvas = page.locator("#prompt-canvas")
            shown = canvas.bounding_box()
            scale = shown["width"] / 512
            assert scale < 0.9, "the page should scale the image down to fit"
            face = (240, 130)  # image pixels: the astronaut's face
            canvas.click(position={"x": face[0] * scale, "y": face[1] * scale})
            page.wait_for_function(
                """() => {
                    const c = document.getElementById('mask-canvas');
                    const a = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                    for (let i = 3; i < a.length; i += 4) if (a[i] > 0) return true;
                    return false;
                }""",
                timeout=30_000,
            )
            points = page.evaluate("() => state.points")
            assert abs(points[0][0] - face[0]) < 2 and abs(points[0][1] - face[1]) < 2  # display -> image pixels
            assert page.text_content("#status").startswith("Mask: score")

            canvas.click(position={"x": 60 * scale, "y": 450 * scale}, button="right")  # a background point
            page.wait_for_function(
                "state.labels.length === 2 && document.getElementById('status').textContent.startsWith('Mask')"
            )
            assert page.evaluate("() => state.labels") == [1, 0]

            ARTIFACTS.mkdir(exist_ok=True)
            screenshot = ARTIFACTS / "serve_page.png"
            page.screenshot(path=str(screenshot))
            shutil.copy(screenshot, tmp_path / screenshot.name)
            assert page.evaluate("() => document.getElementById('download-coco').disabled") is False
            assert not page_errors, page_errors
        finally:
            browser.close()
