"""The atomic-write helper of each package: all or nothing, the user's normal file mode, no temp left."""

import os
import stat

import pytest
import torch
from safetensors.torch import save_file

import ea_dit.atomic
import ea_vae.atomic


@pytest.fixture(params=[ea_vae.atomic, ea_dit.atomic], ids=["ea_vae", "ea_dit"])
def atomic(request):
    return request.param


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield 0o640  # what open(path, "w") gives under this umask
    os.umask(old)


def test_writes_whole_file_with_normal_mode(atomic, tmp_path, umask_027):
    target = tmp_path / "sub" / "w.safetensors"  # the folder is created
    atomic.atomic_write(target, lambda tmp: save_file({"x": torch.ones(3)}, str(tmp)))  # safetensors makes 0o600
    assert stat.S_IMODE(target.stat().st_mode) == umask_027
    text = atomic.atomic_write_text(tmp_path / "c.json", "{}")
    assert text.read_text() == "{}" and stat.S_IMODE(text.stat().st_mode) == umask_027
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["c.json", "sub", "w.safetensors"]


def test_failed_write_keeps_old_file_and_removes_temp(atomic, tmp_path):
    target = tmp_path / "config.json"
    target.write_text("old")

    def broken(tmp):
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic.atomic_write(target, broken)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]


def test_temp_keeps_the_suffix(atomic, tmp_path):
    seen = []
    atomic.atomic_write(tmp_path / "clip.mp4", lambda tmp: (seen.append(tmp), tmp.write_bytes(b"x")))
    assert seen[0].suffix == ".mp4" and seen[0].parent == tmp_path and seen[0].name.startswith(".clip.")
