"""ea_core.atomic, the one atomic-write helper: all or nothing, the user's normal file mode, no temp left."""

import os
import stat

import pytest
import torch
from safetensors.torch import save_file

import ea_core.atomic as atomic
from ea_core.atomic import AtomicFile, atomic_directory, atomic_open, atomic_write_json


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield 0o640  # what open(path, "w") gives under this umask
    os.umask(old)


def test_writes_whole_file_with_normal_mode(tmp_path, umask_027):
    target = tmp_path / "sub" / "w.safetensors"  # the folder is created
    atomic.atomic_write(target, lambda tmp: save_file({"x": torch.ones(3)}, str(tmp)))  # safetensors makes 0o600
    assert stat.S_IMODE(target.stat().st_mode) == umask_027
    text = atomic.atomic_write_text(tmp_path / "c.json", "{}")
    assert text.read_text() == "{}" and stat.S_IMODE(text.stat().st_mode) == umask_027
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["c.json", "sub", "w.safetensors"]


def test_failed_write_keeps_old_file_and_removes_temp(tmp_path):
    target = tmp_path / "config.json"
    target.write_text("old")

    def broken(tmp):
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic.atomic_write(target, broken)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]


def test_temp_keeps_the_suffix(tmp_path):
    seen = []
    atomic.atomic_write(tmp_path / "clip.mp4", lambda tmp: (seen.append(tmp), tmp.write_bytes(b"x")))
    assert seen[0].suffix == ".mp4" and seen[0].parent == tmp_path and seen[0].name.startswith(".clip.")


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if ".tmp" in p.name)


def test_atomic_write_gets_the_umask_mode_and_replaces_in_one_step(tmp_path):
    old = os.umask(0o027)
    try:
        path = atomic_write_json(tmp_path / "sub" / "a.json", {"x": 1})
    finally:
        os.umask(old)
    assert path.read_text() == '{"x": 1}'
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~0o027  # a plain open()'s mode, not mkstemp's 0600
    with atomic_open(path, "w") as f:
        f.write("new")
        assert path.read_text() == '{"x": 1}'  # the target is untouched until the block ends
    assert path.read_text() == "new" and _leftovers(path.parent) == []


def test_atomic_write_error_keeps_the_old_file_and_removes_the_temp(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text("old\n")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_open(path, "w") as f:
            f.write("half")
            raise RuntimeError("boom")
    assert path.read_text() == "old\n" and _leftovers(tmp_path) == []
    f = AtomicFile(tmp_path / "shard.tar")
    f.file.write(b"partial")
    f.discard()
    assert not (tmp_path / "shard.tar").exists() and _leftovers(tmp_path) == []
    with pytest.raises(ValueError, match="mode"):
        AtomicFile(tmp_path / "x", "a")


def test_atomic_directory_replaces_the_folder_whole_or_not_at_all(tmp_path):
    target = tmp_path / "cache"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_directory(target) as tmp:
            (tmp / "half.txt").write_text("half")
            raise RuntimeError("boom")
    assert sorted(p.name for p in target.iterdir()) == ["old.txt"] and _leftovers(tmp_path) == []
    with atomic_directory(target) as tmp:
        (tmp / "new.txt").write_text("new")
        assert (target / "old.txt").exists()  # untouched until the block ends
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"] and _leftovers(tmp_path) == []
