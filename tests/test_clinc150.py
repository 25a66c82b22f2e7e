"""CLINC150: located at run time (env var first), cut into one task per domain in key order, checked downloads."""

import json

import pytest

from lifelong.data import clinc150
from lifelong.errors import LifelongError


@pytest.fixture
def mini_clinc(tmp_path, monkeypatch):
    root = tmp_path / "clinc150"
    root.mkdir()
    domains = {"banking": ["balance", "transfer"], "travel": ["book_flight", "visa"], "home": ["reminder"]}
    split = lambda n: [[f"{i} {k} {j}", i] for d in domains.values() for i in d for k in range(n) for j in [0]]
    full = {"train": split(3), "val": split(1), "test": split(2), "oos_train": [["what is love", "oos"]],
            "oos_val": [], "oos_test": [["sing me a song", "oos"]]}
    (root / "data_full.json").write_text(json.dumps(full))
    (root / "domains.json").write_text(json.dumps(domains))
    monkeypatch.setenv("LIFELONG_DATA", str(tmp_path))
    return root


def test_env_var_wins_and_domains_are_tasks_in_key_order(mini_clinc):
    assert clinc150.locate(download=False) == mini_clinc
    s = clinc150.stream()
    assert [t.name for t in s] == ["banking", "travel", "home"]
    assert s.class_names == ["balance", "transfer", "book_flight", "visa", "reminder"]
    assert [t.classes for t in s] == [[0, 1], [2, 3], [4]]
    assert len(s.tasks[0].train) == 6 and len(s.tasks[0].test) == 4 and len(s.tasks[0].val) == 2
    _, _, oos = clinc150.load()
    assert oos["test"] == ["sing me a song"]


def test_download_checks_sha256(tmp_path, monkeypatch):
    def fake_fetch(url, dest):
        with open(dest, "w") as f:
            f.write("not the real file")

    monkeypatch.setattr(clinc150.urllib.request, "urlretrieve", fake_fetch)
    with pytest.raises(LifelongError, match="does not match its pinned SHA-256"):
        clinc150._download(tmp_path / "dl")
    assert not list((tmp_path / "dl").glob("*.json"))


def test_failed_download_says_what_to_do(tmp_path, monkeypatch):
    def offline(url, dest):
        raise OSError("no network")

    monkeypatch.setattr(clinc150.urllib.request, "urlretrieve", offline)
    with pytest.raises(LifelongError, match="set LIFELONG_DATA"):
        clinc150._download(tmp_path / "dl")


def test_real_clinc150_when_present(monkeypatch):
    monkeypatch.delenv("LIFELONG_DATA", raising=False)
    try:
        root = clinc150.locate(download=False)
    except LifelongError:
        pytest.skip("CLINC150 not on this machine")
    s = clinc150.stream(root)
    assert len(s) == 10 and all(len(t.classes) == 15 for t in s)
    assert [len(t.train) for t in s] == [1500] * 10 and [len(t.test) for t in s] == [450] * 10
    assert s.tasks[0].name == "banking"


def test_real_clinc150_random_split(monkeypatch):
    monkeypatch.delenv("LIFELONG_DATA", raising=False)
    try:
        clinc150.locate(download=False)
    except LifelongError:
        pytest.skip("CLINC150 not on this machine")
    from lifelong.data import load_stream

    def groups(stream):
        return [frozenset(stream.class_names[c] for c in t.classes) for t in stream]

    s0, s1 = load_stream("clinc150:random", seed=0), load_stream("clinc150:random", seed=1)
    assert s0.name == "clinc150:random" and s0.oos is not None and len(s0.oos["test"]) == 1000
    g0 = groups(s0)
    assert len(g0) == 10 and all(len(g) == 15 for g in g0)
    assert len(frozenset().union(*g0)) == 150 == len(s0.class_names)  # disjoint, covering every intent
    assert g0 != groups(s1)
    _, domains, _ = clinc150.load()
    assert all(len(g & frozenset(d)) < 15 for g in g0 for d in domains.values())  # no task is a whole domain
