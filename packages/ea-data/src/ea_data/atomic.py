"""Atomic file writes: the one temp-file-then-rename helper of `ea_data` (and `ea_captions`).

    with atomic_open("out/manifest.jsonl", "w", encoding="utf-8") as f:
        f.write(...)

The data goes to a hidden temp file in the target's folder (`.NAME.tmpPID`); on success it is
flushed, fsynced and renamed over the target in one step, so a reader (or a crash) sees either the
old file or the complete new one. On any exception the temp file is removed and the target is left
as it was. The file gets the mode a plain `open()` gives (0o666 minus the umask), not a private one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


class AtomicFile:
    """An open temp file beside `path` that becomes `path` on :meth:`commit` and vanishes on :meth:`discard`.

    For writers that keep a file open across calls (a tar shard being filled); otherwise use
    :func:`atomic_open`. Parent folders are created.
    """

    def __init__(self, path: str | os.PathLike, mode: str = "wb", **open_kwargs: Any):
        if not any(c in mode for c in "wx"):
            raise ValueError(f"AtomicFile writes a new file; mode must be 'w' or 'x' style, got {mode!r}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.name}.tmp{os.getpid()}")
        self.file: IO = open(self.tmp, mode, **open_kwargs)

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


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_open(path, "wb") as f:
        f.write(data)
    return Path(path)


def atomic_write_json(path: str | os.PathLike, obj: Any, **dumps_kwargs: Any) -> Path:
    """Write `obj` as JSON (`json.dumps(obj, **dumps_kwargs)`, UTF-8) atomically."""
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(obj, **dumps_kwargs))
    return Path(path)
