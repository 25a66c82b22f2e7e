"""Atomic writes: an interrupted write leaves the old file (or nothing), never a partial one."""

import pytest

from lifelong.io import atomic_dir, atomic_write, write_json


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "results.json"
    write_json(target, {"a": 1})

    def crash(p):
        p.write_text('{"half": ')
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, crash)
    assert target.read_text().strip().startswith('{\n  "a": 1')
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_failed_write_of_new_file_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "new.json", lambda p: (_ for _ in ()).throw(RuntimeError("boom")))
    assert list(tmp_path.iterdir()) == []


def test_atomic_dir_replaces_whole_directory(tmp_path):
    atomic_dir(tmp_path / "m", lambda p: (p / "a").write_text("1"))
    atomic_dir(tmp_path / "m", lambda p: (p / "b").write_text("2"))
    assert sorted(x.name for x in (tmp_path / "m").iterdir()) == ["b"]

    def crash(p):
        (p / "c").write_text("3")
        raise RuntimeError

    with pytest.raises(RuntimeError):
        atomic_dir(tmp_path / "m", crash)
    assert sorted(x.name for x in (tmp_path / "m").iterdir()) == ["b"]
    assert sorted(x.name for x in tmp_path.iterdir()) == ["m"]
