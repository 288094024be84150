"""Load on `mobilesam serve`: N concurrent clients segmenting one cached image, on loopback.

    python benchmarks/serve_load.py [--checkpoint mobile_sam.pt] [--clients 4] [--requests 200] [--threads 2]
    python benchmarks/serve_load.py --mixed [--clients 8] [--requests 400] [--image-size 256] [--cache-mib 64]

Starts the service in this process on 127.0.0.1 (a free port), uploads one
image (its embedding is computed once), then sends a fixed number of
single-click segment requests from `--clients` threads and prints
requests/s, p50/p99 latency and the peak RSS of the process (service and
clients together). Then it clicks from one client while one "segment
everything" runs (its own lane in the service) and prints the clicks'
p50/p99 beside the everything's duration. Without a checkpoint the model has
seeded random weights, which changes the masks but not the work.

`--mixed` runs the load of tests/test_server_load.py instead: uploads of
generated images of different sizes, clicks, segment-everything on small
grids, requests that must be refused and clients that hang up mid-request,
every answer checked. It prints requests/s, p50/p99 per kind of request,
the answers that were wrong, and the RSS and malloc-allocated bytes before
and after (measured after `malloc_trim`, as the test does: see
`measure_memory` there).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import io
import logging
import resource
import socket
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import torch
import uvicorn
from PIL import Image
from skimage import data

from mobilesam import load_sam
from mobilesam.bench import machine_summary
from mobilesam.registry import build_from_config, get_config
from mobilesam.server import ServeSettings, create_app

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import test_server_load as load


def _serve(app) -> tuple[uvicorn.Server, threading.Thread, str]:
    # IPPROTO_TCP named, as `mobilesam serve`'s own sockets have it: asyncio sets TCP_NODELAY only
    # on those, and without it each answer (headers, then body) waits ~40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
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
    parser.add_argument("--requests", type=int, default=200, help="Segment requests in all (--mixed: requests of every kind).")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads.")
    parser.add_argument("--mixed", action="store_true", help="The mixed load of tests/test_server_load.py, every answer checked.")
    parser.add_argument(
        "--image-size", type=int, default=None, help="Input side of a random-weights model (default 1024; the test: 256)."
    )
    parser.add_argument("--cache-mib", type=int, default=64, help="--mixed: the embedding cache's bound (MiB).")
    args = parser.parse_args()
    if args.clients < 1 or args.requests < 1:
        parser.error("--clients and --requests must be at least 1")
    if args.image_size is not None and args.checkpoint is not None:
        parser.error("--image-size builds a model with random weights; leave out --checkpoint")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.image_size is None:
        model = load_sam(args.checkpoint or "vit_t")
    else:
        model = build_from_config(dataclasses.replace(get_config("vit_t"), image_size=args.image_size)).eval()
    if args.mixed:
        mixed(model, args.clients, -(-args.requests // args.clients), args.cache_mib)
        return
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
        during, everything_s = clicks_during_everything(url, image_id, clicks)
    finally:
        server.should_exit = True
        thread.join()
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(
        f"{args.requests} segment requests, {args.clients} clients, {torch.get_num_threads()} torch threads: "
        f"{args.requests / elapsed:.1f} requests/s, p50 {statistics.median(latencies) * 1000:.0f} ms, "
        f"p99 {percentile(latencies, 0.99) * 1000:.0f} ms, peak RSS {peak_mib:.0f} MiB"
    )
    print(
        f"{len(during)} clicks from one client during one everything ({everything_s:.1f} s, points_per_side 32): "
        f"p50 {statistics.median(during) * 1000:.0f} ms, p99 {percentile(during, 0.99) * 1000:.0f} ms"
    )


def clicks_during_everything(url: str, image_id: str, clicks: list[list[float]]) -> tuple[list[float], float]:
    """Click latencies (s) while one segment-everything runs, and how long the everything took."""
    done = threading.Event()
    took = []

    def run_everything() -> None:
        with httpx.Client(base_url=url, timeout=600) as client:
            started = time.perf_counter()
            client.post(f"/v1/images/{image_id}/everything", json={"points_per_side": 32}).raise_for_status()
            took.append(time.perf_counter() - started)
        done.set()

    background = threading.Thread(target=run_everything)
    background.start()
    latencies = []
    with httpx.Client(base_url=url, timeout=120) as client:
        while not done.is_set():
            sent = time.perf_counter()
            client.post(
                f"/v1/images/{image_id}/segment", json={"points": [clicks[len(latencies) % len(clicks)]]}
            ).raise_for_status()
            latencies.append(time.perf_counter() - sent)
    background.join()
    return sorted(latencies), took[0]


def mixed(model: torch.nn.Module, clients: int, per_client: int, cache_mib: int) -> None:
    """The mixed load of tests/test_server_load.py from `clients` clients, `per_client` requests each; prints its figures."""
    settings = dataclasses.replace(load.SETTINGS, cache_bytes=cache_mib * 2**20, queue_size=max(64, 2 * clients))
    uploads = load.make_uploads()
    errors = load.ErrorLog()
    logging.getLogger().addHandler(errors)
    try:
        with load.serve(create_app(model, settings)) as url:
            print(f"machine: {machine_summary()}")
            mix = load.Mix(url, uploads, seed=0)
            warm = mix.one_of_each()
            load.drain(url, uploads[0])
            cache_before, untrimmed_before, before = load.cache_bytes(url), load.rss_mib(), load.measure_memory()
            started = time.perf_counter()
            answers = mix.run(clients, per_client)
            elapsed = time.perf_counter() - started
            load.drain(url, uploads[0])
            cache_after, untrimmed_after, after = load.cache_bytes(url), load.rss_mib(), load.measure_memory()
    finally:
        logging.getLogger().removeHandler(errors)
    wrong = [a for a in warm + answers if a.problem]
    print(
        f"{len(answers)} mixed requests, {clients} clients, model input {model.image_encoder.img_size}, "
        f"cache {cache_mib} MiB, {torch.get_num_threads()} torch threads: {len(answers) / elapsed:.1f} requests/s "
        f"({elapsed:.1f} s); wrong answers {len(wrong)}, errors logged {len(errors.records)}"
    )
    for answer in wrong[:5]:
        print(f"  wrong: {answer.kind} -> {answer.status}: {answer.problem}")
    print("| request | sent | answers | p50 ms | p99 ms |")
    print("|---|---|---|---|---|")
    for kind in load.KINDS:
        mine = [a for a in answers if a.kind == kind]
        if not mine:
            continue
        statuses = collections.Counter("hung up" if a.status is None else str(a.status) for a in mine)
        seconds = sorted(a.seconds for a in mine)
        timed = kind not in load.HANG_UPS  # no answer to wait for
        p50, p99 = (
            (f"{statistics.median(seconds) * 1000:.0f}", f"{percentile(seconds, 0.99) * 1000:.0f}") if timed else ("-", "-")
        )
        print(f"| {kind} | {len(mine)} | {', '.join(f'{s} x{n}' for s, n in sorted(statuses.items()))} | {p50} | {p99} |")
    allocated = "" if before.allocated is None else f"; malloc-allocated {before.allocated:.0f} -> {after.allocated:.0f} MiB"
    print(
        f"RSS (after malloc_trim) {before.rss:.0f} -> {after.rss:.0f} MiB ({after.rss - before.rss:+.1f}; untrimmed "
        f"{untrimmed_before:.0f} -> {untrimmed_after:.0f}){allocated}; cache {cache_before / 2**20:.1f} -> {cache_after / 2**20:.1f} MiB"
    )


def percentile(sorted_values: list[float], q: float) -> float:
    """The `q` quantile of already sorted values (nearest rank)."""
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


if __name__ == "__main__":
    main()
