"""The page in headless Chromium: clicks decoded in the page against clicks sent to the service, and the static page.

    python benchmarks/browser.py [--checkpoint mobile_sam.pt] [--clicks 10] [--hover-seconds 3]

Starts `mobilesam serve` (2 threads) on a checkpoint (seeded random vit_t
weights unless given) and `mobilesam export --format web` of the same weights,
then drives Debian's Chromium through Playwright on loopback:

- served page, in-page decoding: per click, the decoder's time in the page and
  the time from the mouse-up to the mask drawn; the hover preview's frame rate
  while the mouse moves; bytes per image (upload, fp16 embedding) and per click;
- the same page with WebAssembly blocked, so it falls back to the service: the
  same clicks, each a request to /segment (the server path);
- the static page, hosted by a plain file server and by one that sends the
  cross-origin isolation headers (WebAssembly threads): the encoder's time in
  the page for the fp32 and int8 encoders, and a click's decode time.

The reference `mobile_sam`'s set_image and click (in this process, 2 threads)
are measured in the same run for scale. Medians; nothing else should run.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import torch
from PIL import Image

from mobilesam import load_sam
from mobilesam.bench import machine_summary, median_seconds
from mobilesam.fidelity import protocol_images
from mobilesam.registry import model_name
from mobilesam.weights import save_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from reference import mobile_sam, paired_models, sync_reference

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking"]
CLI = [sys.executable, "-c", "from mobilesam.cli import run; run()"]
# Click positions on the astronaut photo (512 x 512), image pixels.
CLICKS = [(240, 130), (330, 300), (100, 400), (420, 80), (250, 450), (60, 60), (380, 200), (170, 250), (300, 380), (470, 470)]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="MobileSAM checkpoint (default: seeded random weights)")
    parser.add_argument("--clicks", type=int, default=10)
    parser.add_argument("--hover-seconds", type=float, default=3.0)
    return parser.parse_args()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


class IsolatedHandler(http.server.SimpleHTTPRequestHandler):
    """A static file server that sends the headers cross-origin isolation (WebAssembly threads) needs."""

    def end_headers(self) -> None:
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        super().end_headers()

    def log_message(self, *args) -> None:
        pass


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def host(folder: Path, handler: type) -> str:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), functools.partial(handler, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}"


def wait_status(page, prefix: str, timeout: int = 300_000) -> None:
    page.wait_for_function(f"document.getElementById('status').textContent.startsWith({prefix!r})", timeout=timeout)


def click_times(page, clicks: int) -> list[dict]:
    """Clear, then click one point, `clicks` times: the page's record of each click."""
    canvas = page.locator("#prompt-canvas")
    scale = canvas.bounding_box()["width"] / 512
    for x, y in (CLICKS * (clicks // len(CLICKS) + 1))[:clicks]:
        page.evaluate("resetPrompts()")
        count = page.evaluate("() => mobilesamStats.clicks.length")
        canvas.click(position={"x": x * scale, "y": y * scale})
        page.wait_for_function(f"mobilesamStats.clicks.length > {count}")
    return page.evaluate("() => mobilesamStats.clicks")[-clicks:]


def hover_rate(page, seconds: float) -> float:
    """Preview frames drawn per second while the mouse sweeps the image."""
    page.evaluate("resetPrompts()")
    shown = page.locator("#prompt-canvas").bounding_box()
    before = page.evaluate("() => mobilesamStats.hoverFrames")
    started = time.perf_counter()
    step = 0
    while time.perf_counter() - started < seconds:
        t = step / 40
        page.mouse.move(
            shown["x"] + shown["width"] * (0.5 + 0.4 * np.cos(t)), shown["y"] + shown["height"] * (0.5 + 0.4 * np.sin(t))
        )
        step += 1
    page.wait_for_timeout(300)
    elapsed = time.perf_counter() - started
    return (page.evaluate("() => mobilesamStats.hoverFrames") - before) / elapsed


def median(values: list[float]) -> float:
    return statistics.median(values)


def main() -> int:
    args = parse_args()
    torch.set_num_threads(2)
    if args.checkpoint:
        ours = load_sam(args.checkpoint).eval()
        reference = sync_reference(mobile_sam.sam_model_registry[model_name(ours)](), ours)
    else:
        ours, reference = paired_models("vit_t", seed=0)
    image = protocol_images()["astronaut"]
    reference_predictor = mobile_sam.SamPredictor(reference)
    reference_predictor.set_image(image)
    click = {"point_coords": np.array([CLICKS[0]], float), "point_labels": np.array([1]), "multimask_output": True}
    reference_times = median_seconds(
        {"set_image": lambda: reference_predictor.set_image(image), "click": lambda: reference_predictor.predict(**click)}, 5
    )

    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        checkpoint = save_checkpoint(ours, tmp / "weights.pt")
        photo = tmp / "astronaut.png"
        Image.fromarray(image).save(photo)
        site = tmp / "site"
        subprocess.run([*CLI, "export", "-m", str(checkpoint), "-f", "web", "-o", str(site)], check=True)
        port = free_port()
        service = subprocess.Popen(
            [*CLI, "serve", "--model", str(checkpoint), "--port", str(port), "--threads", "2"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        served = f"http://127.0.0.1:{port}"
        try:
            wait_for(f"{served}/healthz")
            rows = measure(sync_playwright, served, site, photo, args)
        finally:
            service.terminate()
            service.wait(timeout=30)

    print(f"\nmachine: {machine_summary()}")
    print("Chromium headless; service: mobilesam serve --threads 2 on loopback; astronaut photo (512 x 512); medians")
    print(
        f"reference mobile_sam in this process: set_image {1000 * reference_times['set_image']:.0f} ms, "
        f"click {1000 * reference_times['click']:.1f} ms\n"
    )
    print(
        "| path | click: decode ms | click: mouse-up to mask ms | hover frames/s | encoder in page ms | bytes per image | bytes per click |"
    )
    print("|" + "---|" * 7)
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


def measure(sync_playwright, served: str, site: Path, photo: Path, args: argparse.Namespace) -> list[list[str]]:
    rows = []
    upload_bytes = photo.stat().st_size
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        for label, block in (("served, decoded in the page", False), ("served, decoded on the service", True)):
            page = browser.new_page(viewport={"width": 900, "height": 700})
            click_bytes: list[int] = []
            page.on("requestfinished", functools.partial(record_segment_bytes, click_bytes))
            if block:
                page.route("**/*.wasm", lambda route: route.abort())
            page.goto(served)
            page.set_input_files("#file", str(photo))
            wait_status(page, "Ready")
            clicks = click_times(page, args.clicks)
            stats = page.evaluate("() => mobilesamStats")
            assert stats["decoding"] == ("service" if block else "page"), stats
            hover = f"{hover_rate(page, args.hover_seconds):.0f}" if not block else "—"
            rows.append(
                [
                    label,
                    f"{median([c['decodeMs'] for c in clicks]):.1f}" + (" (service)" if block else ""),
                    f"{median([c['totalMs'] for c in clicks]):.1f}",
                    hover,
                    "— (service)",
                    f"{upload_bytes + stats['embeddingBytes']:,} (+ decoder {stats['modelBytes']:,} once)"
                    if not block
                    else f"{upload_bytes:,}",
                    f"{median(click_bytes):,.0f}" if click_bytes else "0",
                ]
            )
            print(rows[-1], flush=True)
            page.close()
        for label, handler in (
            ("static page, no isolation", QuietHandler),
            ("static page, isolated", IsolatedHandler),
        ):
            url = host(site, handler)
            for encoder in ("fp32", "int8"):
                page = browser.new_page(viewport={"width": 900, "height": 700})
                page.goto(f"{url}/?encoder={encoder}")
                wait_status(page, "Model loaded")
                threads = page.evaluate("() => self.crossOriginIsolated ? ort.env.wasm.numThreads : 1")
                embeds = []
                for _ in range(3):
                    page.set_input_files("#file", [])
                    page.set_input_files("#file", str(photo))
                    wait_status(page, "Ready")
                    embeds.append(page.evaluate("() => mobilesamStats.embedMs"))
                clicks = click_times(page, args.clicks)
                stats = page.evaluate("() => mobilesamStats")
                rows.append(
                    [
                        f"{label} ({threads} threads), {encoder} encoder",
                        f"{median([c['decodeMs'] for c in clicks]):.1f}",
                        f"{median([c['totalMs'] for c in clicks]):.1f}",
                        f"{hover_rate(page, args.hover_seconds):.0f}",
                        f"{median(embeds):.0f}",
                        f"0 (model {stats['modelBytes']:,} once)",
                        "0",
                    ]
                )
                print(rows[-1], flush=True)
                page.close()
        browser.close()
    return rows


def record_segment_bytes(sizes: list[int], request) -> None:
    """Append the bytes of a /segment call (request body and response body) to `sizes`."""
    if request.url.endswith("/segment"):
        response = request.response()
        sizes.append(len(request.post_data_buffer or b"") + (len(response.body()) if response else 0))


if __name__ == "__main__":
    sys.exit(main())
