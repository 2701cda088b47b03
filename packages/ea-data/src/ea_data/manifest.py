"""Manifests: one JSON object per line (jsonl), one line per clip, image or unreadable file.

A manifest is the hand-off between the curation stages (split -> score -> filter -> shard) and the
captioner (`ea_captions` fills the `caption` slot). Every record follows :class:`ClipRecord`:

=================  ==========================================================================
field              meaning
=================  ==========================================================================
clip_id            deterministic id: ``<source stem>-<hash of source path>-<start>-<end>``
source             path of the source file, relative to the input folder (posix separators)
type               ``"video"`` or ``"image"``
start_frame        first frame of the clip in the source video
end_frame          one past the last frame (exclusive), so the clip has ``end - start`` frames
start_time         clip start in seconds (``start_frame / fps``)
end_time           clip end in seconds, exclusive
fps                frame rate of the source video (0 for images)
width, height      source frame size in pixels
motion_score       mean optical-flow magnitude (see ``ea_data.scoring``), ``None`` if not scored
text_area          fraction of the frame covered by OCR text boxes (0..1), ``None`` if not scored
aesthetic_score    improved-aesthetic-predictor score (about 1..10), ``None`` if not scored
status             ``"kept"``, ``"rejected"``, ``"error"``; ``"pending"`` between split and filter
reject_reason      why a clip was rejected (``"too_short"``, ``"text_area"``, ...), else ``None``
error              the error message for ``status == "error"``, else ``None``
caption            caption text; empty until the captioner fills it
shard, key         the WebDataset shard file (relative to the output folder) and sample key,
                   once the clip has been written; ``None`` before
=================  ==========================================================================

File helpers: :func:`read_jsonl` (errors name the file and line), :func:`write_jsonl` (atomic),
:func:`append_jsonl` (flushed and fsynced, for resumable work logs; a line cut short by a crash is
dropped when the file is read with ``allow_partial=True`` or appended to again).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from ea_core.atomic import atomic_open

STATUSES = ("kept", "rejected", "error", "pending")


class ManifestError(ValueError):
    """A manifest file or record is malformed; the message names the file/line or the field."""


@dataclass
class ClipRecord:
    """One manifest line (see the module docstring for the meaning and units of each field)."""

    clip_id: str
    source: str
    type: str = "video"
    start_frame: int = 0
    end_frame: int = 0
    start_time: float = 0.0
    end_time: float = 0.0
    fps: float = 0.0
    width: int = 0
    height: int = 0
    motion_score: float | None = None
    text_area: float | None = None
    aesthetic_score: float | None = None
    status: str = "pending"
    reject_reason: str | None = None
    error: str | None = None
    caption: str = ""
    shard: str | None = None
    key: str | None = None

    @property
    def duration(self) -> float:
        """Clip length in seconds."""
        return max(0.0, self.end_time - self.start_time)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClipRecord:
        """Build a record from a manifest line; unknown keys are ignored, missing ones take defaults."""
        missing = [k for k in ("clip_id", "source") if k not in d]
        if missing:
            raise ManifestError(f"manifest record lacks {missing}: {json.dumps(d)[:200]}")
        names = {f.name for f in fields(cls)}
        rec = cls(**{k: v for k, v in d.items() if k in names})
        validate_record(rec.to_dict())
        return rec


RECORD_FIELDS = tuple(f.name for f in fields(ClipRecord))


def validate_record(d: dict[str, Any]) -> None:
    """Check the fields every stage relies on; raise :class:`ManifestError` naming the clip and field."""
    cid = d.get("clip_id", "?")
    if d.get("status") not in STATUSES:
        raise ManifestError(f"record {cid}: status must be one of {STATUSES}, got {d.get('status')!r}")
    if d.get("type") not in ("video", "image"):
        raise ManifestError(f"record {cid}: type must be 'video' or 'image', got {d.get('type')!r}")
    if d["status"] == "rejected" and not d.get("reject_reason"):
        raise ManifestError(f"record {cid}: status 'rejected' needs a reject_reason")
    if d["status"] == "error" and not d.get("error"):
        raise ManifestError(f"record {cid}: status 'error' needs an error message")
    if d["type"] == "video" and d["status"] != "error" and d.get("end_frame", 0) <= d.get("start_frame", 0):
        raise ManifestError(f"record {cid}: end_frame {d.get('end_frame')} must be > start_frame "
                            f"{d.get('start_frame')}")


def make_clip_id(source: str, start_frame: int = 0, end_frame: int = 0) -> str:
    """Deterministic id that is also a valid WebDataset key (no dots, no slashes).

    The stem keeps ids readable; the hash of the full relative path keeps `a/x.mp4` and `b/x.mp4`
    (or `x.mp4` and `x.mkv`) apart.
    """
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(source).stem)[:48] or "file"
    digest = hashlib.sha1(source.encode("utf-8")).hexdigest()[:8]
    return f"{stem}-{digest}-{start_frame:07d}-{end_frame:07d}"


def new_record(source: str, **kw: Any) -> dict[str, Any]:
    """A record dict with every :class:`ClipRecord` field, `clip_id` derived from source and frames."""
    rec = ClipRecord(clip_id="", source=source, **kw)
    rec.clip_id = make_clip_id(source, rec.start_frame, rec.end_frame)
    return rec.to_dict()


def sort_key(record: dict[str, Any]) -> tuple:
    """The manifest order: by source path, then start frame, then clip id (total and deterministic)."""
    return (record.get("source", ""), record.get("start_frame", 0), record.get("end_frame", 0),
            record.get("clip_id", ""))


# ---------------------------------------------------------------------------------------------- files


def read_jsonl(path: str | os.PathLike, allow_partial: bool = False) -> list[dict]:
    """Read a jsonl file into a list of dicts (blank lines skipped).

    A line that is not a JSON object raises :class:`ManifestError` naming the file and line number.
    With `allow_partial`, a last line without its terminating newline that does not parse (a write cut
    short by a crash) is dropped instead; use it for work logs written with :func:`append_jsonl`.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ManifestError(f"{path}: manifest file does not exist") from None
    lines = data.split(b"\n")
    records = []
    for i, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            is_unterminated_tail = i == len(lines) and not data.endswith(b"\n")
            if allow_partial and is_unterminated_tail:
                break
            raise ManifestError(f"{path}:{i}: invalid JSON ({e})") from None
        if not isinstance(obj, dict):
            raise ManifestError(f"{path}:{i}: expected a JSON object, got {type(obj).__name__}")
        records.append(obj)
    return records


def _dumps(record: dict) -> str:
    try:
        return json.dumps(record, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ManifestError(f"record {record.get('clip_id', '?')} cannot be written as JSON: {e}") from None


def write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> Path:
    """Write records as jsonl atomically (see :mod:`ea_core.atomic`)."""
    with atomic_open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(_dumps(r) + "\n")
    return Path(path)


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Append one record and fsync, so a finished line survives a crash of the writer.

    If the file ends in a partial line (the previous writer died mid-write), that fragment is cut off
    first so the new record starts on a line of its own.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (_dumps(record) + "\n").encode("utf-8")
    with open(path, "a+b") as f:
        size = f.seek(0, os.SEEK_END)
        if size:
            f.seek(size - 1)
            if f.read(1) != b"\n":
                f.seek(0)
                data = f.read()
                f.truncate(data.rfind(b"\n") + 1)
                f.seek(0, os.SEEK_END)
        f.write(line)
        f.flush()
        os.fsync(f.fileno())
