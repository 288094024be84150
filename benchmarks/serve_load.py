"""Load on `mobilesam serve`: N concurrent clients segmenting one cached image, on loopback.

    python benchmarks/serve_load.py [--checkpoint mobile_sam.pt] [--clients 4] [--requests 200] [--threads 2]

Starts the service in this process on 127.0.0.1 (a free port), uploads one
image (its embedding is computed once), then sends a fixed number of
single-click segment requests from `--clients` threads and prints
requests/s, p50/p99 latency and the peak RSS of the process (service and
clients together). Without a checkpoint the model has seeded random weights,
which changes the masks but not the work.
"""

from __future__ import annotations

import argparse
import io
import resource
import socket
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import torch
import uvicorn
from PIL import Image
from skimage import data

from mobilesam import load_sam
from mobilesam.bench import machine_summary
from mobilesam.server import ServeSettings, create_app


def _serve(app) -> tuple[uvicorn.Server, threading.Thread, str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return server, thread, f"http://127.0.0.1:{sock.getsockname()[1]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None, help="Checkpoint or model name (default: seeded random vit_t).")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--requests", type=int, default=200, help="Segment requests in all.")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads.")
    args = parser.parse_args()
    if args.clients < 1 or args.requests < 1:
        parser.error("--clients and --requests must be at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = load_sam(args.checkpoint or "vit_t")
    # The queue holds every client's request: this measures throughput, not refusals.
    app = create_app(model, ServeSettings(queue_size=max(16, args.clients)))
    server, thread, url = _serve(app)
    try:
        print(f"machine: {machine_summary()}")
        image = data.astronaut()
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        with httpx.Client(base_url=url, timeout=120) as client:
            started = time.perf_counter()
            uploaded = client.post("/v1/images", files={"file": ("astronaut.png", buffer.getvalue(), "image/png")})
            uploaded.raise_for_status()
            image_id = uploaded.json()["image_id"]
            print(f"image {image.shape[1]}x{image.shape[0]}, embedding {time.perf_counter() - started:.2f} s, id {image_id}")

        rng = np.random.default_rng(0)
        clicks = rng.uniform(0, image.shape[0], size=(args.requests, 2)).round().tolist()

        def client_run(indices: range) -> list[float]:
            latencies = []
            with httpx.Client(base_url=url, timeout=120) as client:
                for i in indices:
                    sent = time.perf_counter()
                    response = client.post(f"/v1/images/{image_id}/segment", json={"points": [clicks[i]]})
                    response.raise_for_status()
                    latencies.append(time.perf_counter() - sent)
            return latencies

        shares = [range(c, args.requests, args.clients) for c in range(args.clients)]
        started = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            latencies = sorted(t for part in pool.map(client_run, shares) for t in part)
        elapsed = time.perf_counter() - started
    finally:
        server.should_exit = True
        thread.join()
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(
        f"{args.requests} segment requests, {args.clients} clients, {torch.get_num_threads()} torch threads: "
        f"{args.requests / elapsed:.1f} requests/s, p50 {statistics.median(latencies) * 1000:.0f} ms, "
        f"p99 {p99 * 1000:.0f} ms, peak RSS {peak_mib:.0f} MiB"
    )


if __name__ == "__main__":
    main()
