"""Atomic file writes: write a temporary file next to the target, then rename it over the target.

Readers (and a job that restarts after a crash) see the old file or the complete new one, never a
partial file. The temporary file is created with the mode a plain `open(path, "w")` would give
(0o666 minus the user's umask, not the 0o600 of `tempfile.mkstemp`) and is removed when writing fails.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write", "atomic_write_text"]


def atomic_write(target: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call `write(tmp)` to fill a new temporary file in `target`'s folder, then rename it to `target`.

    The temporary name keeps `target`'s suffix, for writers that choose the format from it (video
    containers, images). The folder is created when missing. Returns `target` as a Path.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.stem}.{secrets.token_hex(4)}.tmp{target.suffix}")
    # O_EXCL: never reuse a file another writer is filling; mode 0o666 lets the umask decide, as open() does
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        mode = stat.S_IMODE(tmp.stat().st_mode)  # the user's normal mode, read without touching the umask
        write(tmp)
        os.chmod(tmp, mode)  # some writers (safetensors) recreate the file as 0o600
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def atomic_write_text(target: str | os.PathLike, text: str) -> Path:
    """Write `text` (UTF-8) to `target` atomically."""
    return atomic_write(target, lambda tmp: tmp.write_text(text, encoding="utf-8"))
