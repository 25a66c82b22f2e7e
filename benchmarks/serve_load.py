"""Latency and throughput of `lifelong serve` on loopback, measured from a second process.

Starts `lifelong serve MODEL` on a free port, warms it up, then for each batch size sends REQUESTS requests
one after another (one client, closed loop) of distinct CLINC150 test utterances, and reports p50/p99 latency and
throughput. Usage: benchmarks/serve_load.py MODEL [--batches 1,32] [--requests 200] [--out FILE.json]
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
import time

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
    ap.add_argument("--out")
    args = ap.parse_args()

    data, _, _ = clinc150.load()
    texts = [t for t, _ in data.test]
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "lifelong.cli", "serve", args.model, "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    results = {"model": args.model, "requests_per_batch_size": args.requests, "platform": platform.platform(),
               "cpu_count": os.cpu_count(), "threads": os.environ.get("LIFELONG_THREADS"), "runs": []}
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
            cursor = 0
            for batch in [int(b) for b in args.batches.split(",")]:
                latencies = []
                for i in range(args.warmup + args.requests):
                    chunk = [texts[(cursor + j) % len(texts)] for j in range(batch)]
                    cursor += batch  # always new texts: nothing is served from a cache
                    start = time.perf_counter()
                    r = client.post(url + "/predict", json={"texts": chunk})
                    elapsed = time.perf_counter() - start
                    r.raise_for_status()
                    if i >= args.warmup:
                        latencies.append(elapsed)
                ms = sorted(x * 1000 for x in latencies)
                run = {
                    "batch": batch,
                    "p50_ms": statistics.median(ms),
                    "p99_ms": ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))],
                    "mean_ms": statistics.fmean(ms),
                    "requests_per_s": len(ms) / (sum(ms) / 1000),
                    "texts_per_s": batch * len(ms) / (sum(ms) / 1000),
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
