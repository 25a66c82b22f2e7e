"""Latency and throughput of `lifelong serve` on loopback, measured from a second process.

Starts `lifelong serve MODEL [--workers W]` on a free port, warms it up, then for each batch size has CLIENTS
clients (closed loop: each sends its next request when the last is answered) send REQUESTS requests each of distinct
CLINC150 test utterances, and reports p50/p99 latency and throughput (requests answered over the wall time of the
measured phase). Usage: benchmarks/serve_load.py MODEL [--batches 1,32] [--requests 200] [--clients 1]
[--workers 1] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from lifelong.data import clinc150


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--clients", type=int, default=1)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--out")
    args = ap.parse_args()

    data, _, _ = clinc150.load()
    texts = [t for t, _ in data.test]
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "lifelong.cli", "serve", args.model, "--port", str(port),
                               "--workers", str(args.workers)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    results = {"model": args.model, "requests_per_batch_size": args.requests, "platform": platform.platform(),
               "cpu_count": os.cpu_count(), "threads": os.environ.get("LIFELONG_THREADS"), "clients": args.clients,
               "workers": args.workers, "runs": []}
    try:
        with httpx.Client(timeout=120) as client:
            t0 = time.perf_counter()
            while True:
                try:
                    if client.get(url + "/health").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.2)
                if time.perf_counter() - t0 > 300:
                    sys.exit("server did not start in 300 s")
            results["startup_seconds"] = time.perf_counter() - t0
            for batch in [int(b) for b in args.batches.split(",")]:
                ready = threading.Barrier(args.clients)

                def client_loop(k: int) -> list[float]:
                    """Client k: warm-up requests, then (all clients at once) the measured ones, each of new texts."""
                    latencies = []
                    with httpx.Client(timeout=300) as own:
                        for i in range(args.warmup + args.requests):
                            if i == args.warmup:
                                ready.wait()
                            start_text = ((k * (args.warmup + args.requests)) + i) * batch
                            chunk = [texts[(start_text + j) % len(texts)] for j in range(batch)]
                            start = time.perf_counter()
                            own.post(url + "/predict", json={"texts": chunk}).raise_for_status()
                            if i >= args.warmup:
                                latencies.append(time.perf_counter() - start)
                    return latencies

                t0 = time.perf_counter()
                with ThreadPoolExecutor(args.clients) as pool:
                    per_client = list(pool.map(client_loop, range(args.clients)))
                wall = time.perf_counter() - t0
                ms = sorted(x * 1000 for lat in per_client for x in lat)
                measured = max(sum(lat) for lat in per_client)  # the slowest client's measured phase
                run = {
                    "batch": batch,
                    "p50_ms": statistics.median(ms),
                    "p99_ms": ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))],
                    "mean_ms": statistics.fmean(ms),
                    "requests_per_s": len(ms) / measured,
                    "texts_per_s": batch * len(ms) / measured,
                    "wall_s_with_warmup": wall,
                }
                results["runs"].append(run)
                print(json.dumps(run), flush=True)
    finally:
        server.terminate()
        server.wait(timeout=30)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
