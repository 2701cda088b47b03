"""Atomic file writes: the one temp-file-then-rename helper of every easyanimate package.

    atomic_write("model.safetensors", lambda tmp: save_file(tensors, tmp))   # a writer that takes a path
    with atomic_open("out/manifest.jsonl", "w", encoding="utf-8") as f:       # a file object
        f.write(...)
    with atomic_directory("cache/latents") as tmp:                            # a whole folder
        (tmp / "tensors.safetensors").write_bytes(...)

The data goes to a hidden temporary file in the target's folder (`.STEM.<random>.tmp.SUFFIX`: the suffix
is kept for writers that choose the format from it, video containers and images). On success it is
flushed, fsynced and renamed over the target in one step, so a reader (or a job restarted after a crash)
sees the old file or the complete new one, never a partial file. On any exception the temporary file is
removed and the target is left as it was. Files get the mode a plain `open()` gives (0o666 minus the
umask), not the private 0o600 of `tempfile.mkstemp`. Parent folders are created.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = ["AtomicFile", "atomic_directory", "atomic_open", "atomic_write", "atomic_write_bytes",
           "atomic_write_json", "atomic_write_text", "temp_path"]


def temp_path(target: str | os.PathLike) -> Path:
    """A new, unused hidden name beside `target` that keeps its suffix: `.STEM.<8 hex>.tmp.SUFFIX`."""
    target = Path(target)
    return target.with_name(f".{target.stem}.{secrets.token_hex(4)}.tmp{target.suffix}")


def _reserve(target: Path) -> tuple[Path, int]:
    """Create an empty temp file for `target` (O_EXCL: never one another writer is filling); returns it
    and the mode a plain `open()` would give, read without touching the process umask."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(target)
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    return tmp, stat.S_IMODE(tmp.stat().st_mode)


def atomic_write(target: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call `write(tmp)` to fill a new temporary file in `target`'s folder, then rename it to `target`.

    For writers that take a path (safetensors, PyAV, OpenCV, matplotlib). Returns `target` as a Path.
    """
    target = Path(target)
    tmp, mode = _reserve(target)
    try:
        write(tmp)
        os.chmod(tmp, mode)  # some writers (safetensors) recreate the file as 0o600
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


class AtomicFile:
    """An open temp file beside `path` that becomes `path` on :meth:`commit` and vanishes on :meth:`discard`.

    For writers that keep a file open across calls (a tar shard being filled); otherwise use
    :func:`atomic_open`.
    """

    def __init__(self, path: str | os.PathLike, mode: str = "wb", **open_kwargs: Any):
        if not any(c in mode for c in "wx"):
            raise ValueError(f"AtomicFile writes a new file; mode must be 'w' or 'x' style, got {mode!r}")
        self.path = Path(path)
        self.tmp, _ = _reserve(self.path)
        try:
            self.file: IO = open(self.tmp, mode.replace("x", "w"), **open_kwargs)
        except BaseException:
            self.tmp.unlink(missing_ok=True)
            raise

    def commit(self) -> Path:
        """Flush, fsync and close the temp file, then rename it onto `path`."""
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            os.replace(self.tmp, self.path)
        except BaseException:
            self.discard()
            raise
        return self.path

    def discard(self) -> None:
        """Close and delete the temp file; `path` is untouched."""
        try:
            self.file.close()
        finally:
            self.tmp.unlink(missing_ok=True)


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **open_kwargs: Any) -> Iterator[IO]:
    """`open(path, mode)` whose content replaces `path` only when the block ends without an exception."""
    f = AtomicFile(path, mode, **open_kwargs)
    try:
        yield f.file
    except BaseException:
        f.discard()
        raise
    f.commit()


@contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Fill a new hidden folder beside `path`; when the block ends without an exception it replaces `path`
    (an existing folder there is removed first). On an exception the temp folder is removed.

    The swap of an existing folder is two steps (remove, rename): a crash between them leaves no folder,
    never a partial one, so a reader that finds `path` finds it complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    tmp.mkdir()
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically."""
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return Path(path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically."""
    with atomic_open(path, "wb") as f:
        f.write(data)
    return Path(path)


def atomic_write_json(path: str | os.PathLike, obj: Any, **dumps_kwargs: Any) -> Path:
    """Write `obj` as JSON (`json.dumps(obj, **dumps_kwargs)`, UTF-8) atomically."""
    return atomic_write_text(path, json.dumps(obj, **dumps_kwargs))
