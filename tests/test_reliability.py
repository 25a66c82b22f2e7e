"""Issue 17: no bad input crashes a command, poisons a model or gets a 500. Each bad row, tampered file, failed
write and hostile request must end as one clean error (a LifelongError line, or a 4xx/503) with the store as it was."""

import asyncio
import errno
import hashlib
import json
import os
import random
import shutil

import pytest
from fastapi.testclient import TestClient
from test_cli import assert_one_line_error, lifelong
from test_store import GROUPS, TASKS

from lifelong.data.files import read_rows
from lifelong.errors import LifelongError
from lifelong.store import ModelStore, server


def one_line(excinfo, *needles):
    message = str(excinfo.value)
    assert "\n" not in message and message.encode("utf-8")
    for n in needles:
        assert n in message, message
    return message


# -- the row checks, through the loader ----------------------------------------------------------------------------
GOOD = '{"text": "hello there", "label": "greet"}\n'
BAD_JSONL = {
    "surrogate-text": ('{"text": "hi \\udfff", "label": "a"}', "lone surrogate"),
    "surrogate-label": ('{"text": "hi", "label": "\\ud800"}', "lone surrogate"),
    "float-label": ('{"text": "hi", "label": 1.0}', "string or an integer"),
    "bool-label": ('{"text": "hi", "label": true}', "boolean"),
    "nan-label": ('{"text": "hi", "label": NaN}', "NaN"),
    "infinity-label": ('{"text": "hi", "label": Infinity}', "Infinity"),
    "1e400-label": ('{"text": "hi", "label": 1e400}', "string or an integer"),
    "huge-int-label": ('{"text": "hi", "label": ' + "9" * 5000 + "}", "too long"),
    "big-int-label": ('{"text": "hi", "label": ' + "9" * 30 + "}", "too large"),
    "deep-label": ('{"text": "hi", "label": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested"),
    "duplicate-key": ('{"text": "hi", "label": "a", "label": "b"}', "twice"),
    "control-label": ('{"text": "hi", "label": "a\\u0007b"}', "unprintable"),
    "newline-label": ('{"text": "hi", "label": "a\\nb"}', "unprintable"),
    "zero-width-text": ('{"text": "\\u200b\\u200d\\ufeff", "label": "a"}', "invisible"),
    "reserved-label": ('{"text": "hi", "label": "out_of_scope"}', "reserved"),
    "long-label": ('{"text": "hi", "label": "' + "x" * 5000 + '"}', "limit"),
    "object-label": ('{"text": "hi", "label": {"a": 1}}', "dict"),
    "null-text": ('{"text": null, "label": "a"}', "missing field 'text'"),
    "number-text": ('{"text": 5, "label": "a"}', "must be a string"),
    "not-object": ("[1, 2]", "expected a JSON object"),
}


@pytest.mark.parametrize("kind", sorted(BAD_JSONL))
def test_bad_jsonl_rows_are_one_line_naming_file_and_line(tmp_path, kind):
    row, needle = BAD_JSONL[kind]
    path = tmp_path / f"{kind}.jsonl"
    path.write_text(GOOD + row + "\n", encoding="utf-8")
    with pytest.raises(LifelongError) as e:
        read_rows(path, "text", "label", None)
    one_line(e, f"{path}:2", needle)


@pytest.mark.parametrize("content, needle", [
    ("text,label,label\nhi,a,b\n", "more than once"),
    ('text,label\n"hi there,a\n', "never closed"),
    ("\ntext,label\nhi,a\n", "blank line before the header"),
    ("text,label\nhi,out_of_scope\n", "reserved"),
    ("text,label\n\u200b,a\n", "invisible"),
    ("text,label\nhi,a\x01b\n", "unprintable"),
])
def test_bad_csv_files_are_one_line(tmp_path, content, needle):
    path = tmp_path / "data.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(LifelongError) as e:
        read_rows(path, "text", "label", None)
    one_line(e, str(path), needle)


def test_integer_labels_are_read_as_their_digits(tmp_path):
    path = tmp_path / "ints.jsonl"
    path.write_text('{"text": "hi", "label": 7}\n{"text": "yo", "label": "7"}\n')
    assert [label for _, _, label, *_ in read_rows(path, "text", "label", None)] == ["7", "7"]


# -- a learned model to tamper with, write into and serve ---------------------------------------------------------
@pytest.fixture(scope="module")
def learned(tmp_path_factory, tiny_backbone):
    path = tmp_path_factory.mktemp("rel") / "model"
    store = ModelStore.init(path, tiny_backbone, "ncm", {})
    store.learn([(t, c) for c in GROUPS[0] for t in TASKS[c]], "t0", holdout=0.0)
    return path


@pytest.fixture
def model(learned, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(learned, copy)
    return copy


def snapshot(path):
    """Every file of a model with its bytes: 'unchanged' means this is equal before and after."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file() and p.name != "lock"}


def edit_json(file, change):
    data = json.loads(file.read_text())
    data = change(data)
    file.write_text(json.dumps(data))


def fix_digest(model, name):
    """Make the manifest agree with a file changed on purpose: the schema, not the checksum, must catch it."""
    digest = hashlib.sha256((model / "versions/v0001/learner" / name).read_bytes()).hexdigest()

    def change(m):
        m["versions"][1]["files"][name] = digest
        return m
    edit_json(model / "manifest.json", change)


@pytest.mark.parametrize("field, change", [
    ("backbone", lambda m: {k: v for k, v in m.items() if k != "backbone"}),
    ("current", lambda m: m | {"current": "1"}),
    ("current", lambda m: m | {"current": 7}),
    ("versions", lambda m: m | {"versions": None}),
    ("versions.1.tasks", lambda m: m | {"versions": m["versions"][:1] + [m["versions"][1] | {"tasks": 5}]}),
    ("versions.1.threshold", lambda m: m | {"versions": m["versions"][:1] + [m["versions"][1] | {"threshold": "x"}]}),
])
def test_tampered_manifest_is_one_line_naming_file_and_field(model, field, change):
    edit_json(model / "manifest.json", change)
    with pytest.raises(LifelongError) as e:
        ModelStore(model).load()
    one_line(e, "manifest.json", field)


@pytest.mark.parametrize("change, field", [
    (lambda meta: [meta], "(top level)"),
    (lambda meta: meta | {"num_classes": "abc"}, "num_classes"),
    (lambda meta: {k: v for k, v in meta.items() if k != "method"}, "method"),
])
def test_tampered_learner_json_with_digest_fixed(model, change, field):
    edit_json(model / "versions/v0001/learner/learner.json", change)
    fix_digest(model, "learner.json")
    with pytest.raises(LifelongError) as e:
        ModelStore(model).load()
    one_line(e, "learner.json", field)


@pytest.mark.parametrize("edit, needle", [
    (lambda h: {k: v | {"shape": [v["shape"][0] + 1, *v["shape"][1:]]} for k, v in h.items() if k != "__metadata__"}, "do not hold"),
    (lambda h: {k: v | {"dtype": "X9"} for k, v in h.items() if k != "__metadata__"}, "unknown dtype"),
    (lambda h: {k: v | {"data_offsets": "0"} for k, v in h.items() if k != "__metadata__"}, "data_offsets"),
    (lambda h: [h], "not a JSON object"),
])
def test_tampered_safetensors_header_with_digest_fixed(model, edit, needle):
    file = model / "versions/v0001/learner/weights.safetensors"
    raw = file.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.dumps(edit(json.loads(raw[8:8 + n]))).encode()
    file.write_bytes(len(header).to_bytes(8, "little") + header + raw[8 + n:])
    fix_digest(model, "weights.safetensors")
    with pytest.raises(LifelongError) as e:
        ModelStore(model).load()
    one_line(e, "weights.safetensors", needle)


# -- write failures leave the store as it was --------------------------------------------------------------------
def _full(*_, **__):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("where", ["save", "manifest"])
def test_disk_full_is_one_line_and_the_store_is_unchanged(model, monkeypatch, where):
    from lifelong.store import store as store_module

    before = snapshot(model)
    store = ModelStore(model)
    if where == "save":
        monkeypatch.setattr(store_module, "crash_point", lambda name: name == "after-save" and _full())
    else:
        real = store_module.write_json
        monkeypatch.setattr(store_module, "write_json",
                            lambda path, *a, **k: _full() if path.name == "manifest.json" else real(path, *a, **k))
    with pytest.raises(LifelongError) as e:
        store.learn([(t, c) for c in GROUPS[1] for t in TASKS[c]], holdout=0.0)
    one_line(e, "No space left on device", "unchanged")
    assert snapshot(model) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder")
def test_read_only_model_folder_is_one_line(model):
    before = snapshot(model)
    os.chmod(model / "versions", 0o500)
    try:
        with pytest.raises(LifelongError) as e:
            ModelStore(model).learn([(t, c) for c in GROUPS[1] for t in TASKS[c]], holdout=0.0)
        one_line(e, "unchanged")
    finally:
        os.chmod(model / "versions", 0o700)
    assert snapshot(model) == before


# -- fuzz: generated bad rows through the loader and through learn --------------------------------------------
def bad_values(rng):
    """One bad (text, label) pair of a random kind, the rest of the row good."""
    texts = ["\udfff", "", "   ", "\u200b\u200c", "x" * 20_001, None, 5, 1.5, True, ["a"], {"t": 1}]
    labels = ["\ud800x", "", "  ", "a\x00b", "a\nb", "\u202e\x7f", "x" * 201, "out_of_scope", "oos", None, 1.0,
              float("nan"), float("inf"), True, False, 10**19, -(10**30), ["a"], {"a": 1}]
    if rng.random() < 0.5:
        return rng.choice(texts), "fine"
    return "a fine text", rng.choice(labels)


def test_fuzzed_rows_through_loader_and_learn_fail_cleanly(model, tmp_path):
    rng = random.Random(17)
    store, before = ModelStore(model), snapshot(model)
    good = [(t, c) for c in GROUPS[1] for t in TASKS[c]]
    for i in range(300):
        text, label = bad_values(rng)
        rows = good[:]
        rows.insert(rng.randrange(len(rows) + 1), (text, label))
        with pytest.raises(LifelongError) as e:
            store.learn(rows, holdout=0.0)
        one_line(e)
        path = tmp_path / f"fuzz{i}.jsonl"
        if label == "oos":  # bad only as a training row: held-out files have them
            continue
        line = json.dumps({"text": text, "label": label})
        path.write_text("".join(json.dumps({"text": t, "label": c}) + "\n" for t, c in good) + line + "\n")
        with pytest.raises(LifelongError) as e:
            read_rows(path, "text", "label", None)
        one_line(e, f"{path}:{len(good) + 1}")
    assert snapshot(model) == before


def test_learn_refuses_a_task_name_it_cannot_write(model):
    before = snapshot(model)
    with pytest.raises(LifelongError) as e:
        ModelStore(model).learn([(t, c) for c in GROUPS[1] for t in TASKS[c]], "bad\udc80name", holdout=0.0)
    one_line(e, "'name'", "lone surrogate")
    assert snapshot(model) == before


# -- the server ------------------------------------------------------------------------------------------------
TOKEN = "s3cret-token"


def hostile(rng):
    """A random hostile request: (method, path, headers, body bytes)."""
    bodies = [b"", b"{", b"null", b"[]", b'{"texts": ["\\ud800"]}', b'{"texts": NaN}', b'{"texts": ["hi"], "top_k": 1e400}',
              b'{"texts": ["hi"], "top_k": NaN}', b'{"texts": [' + b"9" * 5000 + b"]}", b'{"texts": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
              b'{"texts": ["\\u200b"]}', b'{"texts": ["hi"], "\\udfff": 1}', b'{"texts": ["a"], "texts": 3}', b"\xff\xfe\x00",
              b'{"examples": [{"text": "hi", "label": "\\udfff"}]}', b'{"examples": [{"text": "hi", "label": 1.0}]}',
              b'{"examples": [{"text": "hi", "label": "out_of_scope"}]}', b'{"name": "\\ud800", "examples": []}',
              json.dumps({"texts": ["x" * 3000]}).encode(), json.dumps({"texts": ["hi"] * 300}).encode()]
    path = rng.choice(["/predict", "/predict", "/learn", "/info", "/health", "/nope", "/predict/", "//predict"])
    method = rng.choice(["POST", "POST", "POST", "GET", "PUT", "DELETE"])
    headers = rng.choice([{}, {"content-type": "application/json"}, {"content-type": "text/plain"},
                          {"authorization": TOKEN}, {"authorization": f"Bearer {TOKEN}x"}, {"authorization": "Bearer "},
                          {"authorization": "Basic czNjcmV0"}, {"content-type": "application/json; charset=latin-1"}])
    return method, path, headers, rng.choice(bodies)


def test_hostile_requests_never_get_a_5xx(model):
    client = TestClient(server.create_app(model, learn_token=TOKEN))
    rng = random.Random(5)
    before = snapshot(model)
    for _ in range(400):
        method, path, headers, body = hostile(rng)
        r = client.request(method, path, content=body, headers=headers)
        assert r.status_code < 500, (method, path, headers, body[:80], r.status_code, r.text[:200])
        json.loads(r.content) if r.headers.get("content-type", "").startswith("application/json") else None
    assert snapshot(model) == before


def test_learn_checks_the_token_before_reading_the_body(model):
    client = TestClient(server.create_app(model, learn_token=TOKEN))
    assert client.post("/learn", content=b"{not json").status_code == 401
    assert client.post("/learn", content=b"{not json", headers={"authorization": TOKEN}).status_code == 401
    r = client.post("/learn", content=b"{not json", headers={"authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 422
    assert TestClient(server.create_app(model)).post("/learn", content=b"x" * 100).status_code == 403


@pytest.mark.parametrize("token", ["", " ", "two words", "caf\u00e9"])
def test_a_blank_or_unsendable_token_is_refused_at_start(model, token):
    with pytest.raises(LifelongError) as e:
        server.create_app(model, learn_token=token)
    one_line(e, "--learn-token")


def test_unreadable_model_is_503_on_every_route_without_server_paths(model):
    client = TestClient(server.create_app(model))
    (model / "versions/v0001/learner/weights.safetensors").write_bytes(b"garbage")
    r = client.post("/predict", json={"texts": ["hi"]})
    assert r.status_code == 503 and "versions/v0001/learner/weights.safetensors" in r.json()["detail"]
    assert str(model) not in r.text
    (model / "manifest.json").write_text("{broken")
    for method, route in (("GET", "/health"), ("GET", "/info"), ("POST", "/predict")):
        r = client.request(method, route, json={"texts": ["hi"]} if method == "POST" else None)
        assert r.status_code == 503, (route, r.text)
        assert "manifest.json" in r.json()["detail"] and str(model.parent) not in r.text


def test_a_stalled_body_gets_408():
    sent = []

    async def app(scope, receive, send):
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})

    async def never():
        await asyncio.Event().wait()

    async def send(message):
        sent.append(message)

    gate = server.Gate(app, {}, 100, None, timeout=0.01)
    asyncio.run(gate({"type": "http", "path": "/predict", "headers": []}, never, send))
    assert sent[0]["status"] == 408 and len(sent) == 2


@pytest.mark.parametrize("body, status, needle", [
    (b'{"texts": ["\\ud800"]}', 422, "unicode string"),
    (b'{"texts": NaN}', 422, "valid list"),
    (b'{"texts": ["hi"], "top_k": 1e400}', 422, "integer"),
    (b'{"texts": ["\\u200b"]}', 422, "invisible"),
    (b'{"texts": ["hi"], "\\udfff": 1}', 422, "unicode string"),
    (b'{"texts": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", 400, "parsing the body"),
])
def test_predict_refusals_name_the_problem(model, body, status, needle):
    r = TestClient(server.create_app(model)).post("/predict", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status and needle in r.text, r.text


def test_learn_over_http_refuses_labels_the_model_could_not_write(model):
    client = TestClient(server.create_app(model, learn_token=TOKEN))
    before = snapshot(model)
    for label in ("\udfff", "out_of_scope", "a\x07", "x" * 300):
        r = client.post("/learn", content=json.dumps({"examples": [{"text": "hi", "label": label}]}).encode(),
                        headers={"authorization": f"Bearer {TOKEN}", "content-type": "application/json"})
        assert r.status_code == 422 and r.json()["detail"], r.text
    assert snapshot(model) == before


def test_cli_predict_and_serve_refuse_bad_input_with_one_line(model, tmp_path):
    assert_one_line_error(lifelong("predict", model, "--text", "ok", "--text", "bad \udcff"), "--text 2", "lone surrogate")
    queries = tmp_path / "queries.txt"
    queries.write_text("will it rain\n\u200b\u200b\n")
    assert_one_line_error(lifelong("predict", model, "--file", queries), f"{queries}:2", "invisible")
    assert_one_line_error(lifelong("serve", model, "--learn-token", ""), "--learn-token", "empty")


def test_info_check_names_every_version_a_damaged_shared_file_breaks(tmp_path, tiny_backbone):
    model = tmp_path / "m"
    store = ModelStore.init(model, tiny_backbone, "adapters", {"precision": "1bit", "epochs": 1, "rank": 2})
    for i in range(2):
        store.learn([(t, c) for c in GROUPS[i] for t in TASKS[c]], f"t{i}", holdout=0.0)
    assert lifelong("info", model, "--check").returncode == 0
    shared = model / "versions/v0002/learner/task000.safetensors"
    assert shared.stat().st_nlink == 2
    raw = bytearray(shared.read_bytes())
    raw[-1] ^= 1
    with open(shared, "r+b") as f:  # in place: the hard link stays
        f.write(raw)
    proc = lifelong("info", model, "--check")
    assert_one_line_error(proc, "2 damaged version(s): 1, 2")
    assert "shared with 1 other version" in proc.stdout
