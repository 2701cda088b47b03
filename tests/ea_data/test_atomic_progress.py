"""The atomic-write helper (mode, cleanup on error) and the progress bar's non-terminal settings."""

import io
import os
import stat

import pytest

from ea_data.atomic import AtomicFile, atomic_open, atomic_write_json
from ea_data.progress import NON_TTY_INTERVAL, progress_bar


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


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_redraws_rarely_when_not_a_terminal():
    log = io.StringIO()
    with progress_bar(total=5000, file=log, desc="work") as bar:
        assert bar.mininterval == NON_TTY_INTERVAL >= 15 and bar.maxinterval >= NON_TTY_INTERVAL
        for _ in range(5000):
            bar.update()
    draws = [s for s in log.getvalue().split("\r") if s.strip()]
    assert len(draws) <= 3, draws  # first state, (at most one timed redraw), final state
    assert "5000/5000" in draws[-1]
    tty = progress_bar(total=10, file=_Tty())
    assert tty.mininterval < 1  # a terminal keeps tqdm's usual redraw rate
    tty.close()
    with progress_bar(total=1, file=io.StringIO(), mininterval=2) as explicit:
        assert explicit.mininterval == 2  # an explicit setting wins
