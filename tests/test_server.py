"""`lifelong serve`: valid and invalid requests in-process, then one real uvicorn on 127.0.0.1."""

import json
import os
import socket
import subprocess
import sys
import time

import httpx
import pytest
from fastapi.testclient import TestClient
from test_cli import lifelong
from test_store import GROUPS, TASKS, write_task

from lifelong.store import server


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_backbone):
    """A model with one learned task (ncm: no training, so the fixture is quick)."""
    root = tmp_path_factory.mktemp("served")
    model = root / "model"
    assert lifelong("init", model, "--backbone", tiny_backbone, "--method", "ncm").returncode == 0
    proc = lifelong("learn", model, "--data", write_task(root / "t0.jsonl", GROUPS[0]))
    assert proc.returncode == 0, proc.stderr
    return model


@pytest.fixture
def client(served):
    return TestClient(server.create_app(served, learn_token="s3cret"))


def test_health_info_and_predict(client):
    assert client.get("/health").json() == {"status": "ok", "version": 1}
    info = client.get("/info").json()
    assert info["method"] == "ncm" and info["current"] == 1 and info["learn_enabled"]
    assert [c["name"] for c in info["classes"]] == GROUPS[0]
    r = client.post("/predict", json={"texts": ["will it rain tomorrow", "pay my gas bill"], "top_k": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["version"] == 1 and len(body["predictions"]) == 2
    for p in body["predictions"]:
        assert p["label"] in GROUPS[0] + ["out_of_scope"]
        assert [t["label"] for t in p["top"]] and len(p["top"]) == 2


@pytest.mark.parametrize("payload, status", [
    ({"texts": []}, 422),                                    # empty batch
    ({"texts": ["hi"] * (server.MAX_BATCH + 1)}, 422),       # batch too large
    ({"texts": ["x" * (server.MAX_TEXT_CHARS + 1)]}, 422),   # text too long
    ({"texts": [""]}, 422),                                  # empty text
    ({"texts": [3]}, 422),                                   # wrong type
    ({"texts": "hello"}, 422),                               # not a list
    ({"texts": ["hi"], "top_k": 0}, 422),                    # bad top_k
    ({"texts": ["hi"], "extra": 1}, 422),                    # unknown field
    ({}, 422),                                               # missing field
])
def test_invalid_predict_requests_get_4xx_with_a_message(client, payload, status):
    r = client.post("/predict", json=payload)
    assert r.status_code == status and r.json()["detail"]


def test_malformed_and_oversized_bodies(client):
    r = client.post("/predict", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422
    big = json.dumps({"texts": ["a" * 1000] * 1100}).encode()
    assert len(big) > server.MAX_PREDICT_BODY
    r = client.post("/predict", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "bytes" in r.json()["detail"]

    def chunks():  # no content-length: the limit applies to what is streamed
        for _ in range(20):
            yield b"x" * 100_000

    r = client.post("/predict", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_learn_needs_the_token_then_the_next_request_sees_the_new_version(served):
    examples = [{"text": t, "label": c} for c in GROUPS[1] for t in TASKS[c]]
    off = TestClient(server.create_app(served))
    assert off.post("/learn", json={"examples": examples}).status_code == 403
    client = TestClient(server.create_app(served, learn_token="s3cret"))
    assert client.post("/learn", json={"examples": examples}).status_code == 401
    r = client.post("/learn", json={"examples": examples}, headers={"authorization": "Bearer wrong"})
    assert r.status_code == 401
    r = client.post("/learn", json={"examples": examples[:1] + [{"text": "x", "label": "weather"}]},
                    headers={"authorization": "Bearer s3cret"})
    assert r.status_code == 422 and "already learned" in r.json()["detail"]
    r = client.post("/learn", json={"name": "t1", "examples": examples}, headers={"authorization": "Bearer s3cret"})
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 2
    top = client.post("/predict", json={"texts": ["book a flight to paris"], "top_k": 4}).json()
    assert {t["label"] for t in top["predictions"][0]["top"]} == set(GROUPS[0] + GROUPS[1])
    assert top["version"] == 2
    # a version published by another process (the command line) is picked up without a restart
    assert lifelong("rollback", served, "--to", 1).returncode == 0
    assert client.post("/predict", json={"texts": ["hi there"]}).json()["version"] == 1


def test_corrupted_current_version_gives_503_not_500(tmp_path, tiny_backbone):
    model = tmp_path / "model"
    assert lifelong("init", model, "--backbone", tiny_backbone, "--method", "ncm").returncode == 0
    assert lifelong("learn", model, "--data", write_task(tmp_path / "t0.jsonl", GROUPS[0])).returncode == 0
    (model / "versions/v0001/learner/weights.safetensors").write_bytes(b"garbage")
    r = TestClient(server.create_app(model)).post("/predict", json={"texts": ["hi"]})
    assert r.status_code == 503 and "weights.safetensors" in r.json()["detail"]


def test_real_uvicorn_on_loopback(served):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "lifelong.cli", "serve", str(served), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ})
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                if httpx.get(url + "/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            pytest.fail("server did not start")
        r = httpx.post(url + "/predict", json={"texts": ["will it rain tomorrow"]}, timeout=60)
        assert r.status_code == 200 and r.json()["predictions"][0]["label"]
        assert httpx.post(url + "/predict", json={"texts": 5}).status_code == 422
        assert httpx.post(url + "/learn", json={"examples": []}).status_code in (403, 422)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    output = proc.stdout.read().decode()
    assert f"lifelong: serving {served} on http://127.0.0.1:{port} (version 1)" in output  # printed once listening
    assert "INFO lifelong.store.server: ready:" in output  # the CLI's log format, for the server's lines too
    assert "INFO uvicorn.error:" in output or "INFO uvicorn" in output


def test_workers_each_load_the_model_and_follow_new_versions(served, tmp_path):
    import re
    import shutil
    import threading

    model = tmp_path / "model"
    shutil.copytree(served, model)  # learned into below: the module's model stays as it was
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "lifelong.cli", "serve", str(model), "--port", str(port),
                             "--workers", "2"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "LIFELONG_THREADS": "2"}, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        for _ in range(1200):  # both workers up: each prints its line once it listens with the model loaded
            if len({m for line in list(lines) for m in re.findall(r"\(version 1, worker (\d+)\)", line)}) == 2:
                break
            time.sleep(0.1)
        else:
            pytest.fail("two workers did not start:\n" + "".join(lines))
        url = f"http://127.0.0.1:{port}"
        assert httpx.post(url + "/predict", json={"texts": ["will it rain tomorrow"]}, timeout=60).json()["version"] == 1
        assert lifelong("learn", model, "--data", write_task(tmp_path / "t1.jsonl", GROUPS[1])).returncode == 0
        answers = [httpx.post(url + "/predict", json={"texts": ["pay my gas bill"]}, timeout=60).json()
                   for _ in range(8)]  # fresh connections: spread over the workers by the kernel
        current = json.loads((model / "manifest.json").read_text())["current"]
        assert current != 1 and {a["version"] for a in answers} == {current}  # each worker follows the manifest
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    assert "Traceback" not in "".join(lines)


def test_openapi_describes_responses_and_docs_are_off(client):
    schema = client.get("/openapi.json").json()
    predict = schema["paths"]["/predict"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert predict["$ref"].endswith("/PredictResponse")
    score = schema["components"]["schemas"]["Prediction"]["properties"]["score"]
    assert "threshold" in score["description"]
    assert client.get("/docs").status_code == 404  # its page needs a CDN: off rather than blank
