"""Shard stage: write kept clips and images into WebDataset tar shards.

Each video sample is two tar members sharing the key `clip_id`:

- ``<key>.mp4``: the clip cut from its source by time range, resampled to `ShardConfig.fps` (never
  above the source rate), resized to `ShardConfig.size` (cover + centre crop) or so its longer side
  is at most `ShardConfig.max_side` (aspect kept), re-encoded as H.264;
- ``<key>.json``: ``type`` ("video"), ``caption`` (the slot the captioner fills), the scores,
  ``fps``, ``num_frames``, ``width``, ``height`` (of the written mp4), ``source``, ``start_time``,
  ``end_time``, ``start_frame``, ``end_frame``, ``source_fps``, ``duration``.

Images are ``<key>.jpg`` / ``<key>.png`` (the source format; others become png) with a json whose
``type`` is "image" (``num_frames`` 1, ``fps`` 0). Videos and images go to separate shard series
(``video-000000.tar``, ``image-000000.tar``) so a loader can mix them at any ratio.

Shards are reproducible: members are written in a fixed order with fixed mtime/owner, samples follow
the manifest order, and each shard is written to a temp file and renamed when complete. A log of
completed shards lets an interrupted run continue with the next shard (see :func:`write_shards`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import webdataset as wds

from ea_core.atomic import AtomicFile
from ea_core.files import NON_NEGATIVE, POSITIVE, check_fields
from ea_data.manifest import append_jsonl, read_jsonl, sort_key, write_jsonl
from ea_data.progress import progress_bar
from ea_vae.video_io import VideoReadError, iter_frames, write_video


@dataclass
class ShardConfig:
    """How clips are written. `size` is `(width, height)` and wins over `max_side` when set.

    `fps`: target frame rate of the written clips (`None` keeps the source rate; a higher rate than
    the source's is never produced). `crf`: H.264 quality (lower = better, bigger). A shard is closed
    when it holds `max_count` samples or adding the next sample would exceed `max_bytes` (tar's final
    padding to a 10 KiB record comes on top; a single sample larger than `max_bytes` gets its own shard).
    """

    fps: float | None = 8.0
    max_side: int | None = 512
    size: tuple[int, int] | None = None
    crf: int = 18
    max_count: int = 1000
    max_bytes: int = 1 << 30
    jpeg_quality: int = 95

    def __post_init__(self):
        check_fields(self, {**dict.fromkeys(("fps", "max_side", "size", "max_count", "max_bytes", "jpeg_quality"),
                                            POSITIVE), "crf": NON_NEGATIVE})
        if self.fps is not None and self.fps <= 0:
            raise ValueError(f"ShardConfig.fps must be positive or None, got {self.fps}")
        if self.max_side is not None and self.max_side < 2:
            raise ValueError(f"ShardConfig.max_side must be >= 2, got {self.max_side}")
        if self.size is not None:
            self.size = tuple(int(v) for v in self.size)
            if len(self.size) != 2 or min(self.size) < 2 or any(v % 2 for v in self.size):
                raise ValueError(f"ShardConfig.size must be (width, height), even and >= 2, got {self.size}")
        if self.max_count < 1 or self.max_bytes < 1:
            raise ValueError(f"shard limits must be positive, got max_count={self.max_count}, "
                             f"max_bytes={self.max_bytes}")

    def fingerprint(self) -> str:
        return hashlib.sha1(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------- resizing


def output_size(width: int, height: int, cfg: ShardConfig) -> tuple[int, int]:
    """`(width, height)` of the written frames: `cfg.size`, or the source scaled to `max_side`, even."""
    if cfg.size is not None:
        return cfg.size
    scale = 1.0
    if cfg.max_side is not None and max(width, height) > cfg.max_side:
        scale = cfg.max_side / max(width, height)
    # H.264 in yuv420p needs even sizes; round down so max_side is never exceeded.
    w = max(2, int(width * scale + 1e-6) // 2 * 2)
    h = max(2, int(height * scale + 1e-6) // 2 * 2)
    return w, h


def resize_frame(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize `(H, W, 3)` uint8 to cover `size = (w, h)` keeping the aspect ratio, then centre-crop."""
    w, h = size
    fh, fw = frame.shape[:2]
    if (fw, fh) == (w, h):
        return frame
    scale = max(w / fw, h / fh)
    rw, rh = max(w, math.ceil(fw * scale - 1e-6)), max(h, math.ceil(fh * scale - 1e-6))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    resized = cv2.resize(frame, (rw, rh), interpolation=interp)
    x0, y0 = (rw - w) // 2, (rh - h) // 2
    return np.ascontiguousarray(resized[y0:y0 + h, x0:x0 + w])


# ---------------------------------------------------------------------------------------- encoding


def sample_json(record: dict[str, Any], **written: Any) -> dict[str, Any]:
    """The json member of a sample: manifest fields a loader/trainer needs, plus what was written."""
    keep = ("clip_id", "type", "caption", "source", "start_time", "end_time", "start_frame", "end_frame",
            "motion_score", "text_area", "aesthetic_score")
    meta = {k: record.get(k) for k in keep}
    meta["caption"] = meta["caption"] or ""
    meta["source_fps"] = record.get("fps")
    meta["duration"] = round(max(0.0, (record.get("end_time") or 0) - (record.get("start_time") or 0)), 6)
    meta.update(written)
    return meta


def encode_video_sample(record: dict[str, Any], input_dir: str | os.PathLike, cfg: ShardConfig) -> dict:
    """Cut `record`'s time range from its source and return `{"__key__", "mp4", "json"}` (bytes).

    Raises :class:`VideoReadError` naming the file if it cannot be decoded.
    """
    path = Path(input_dir) / record["source"]
    src_fps = float(record["fps"])
    fps = src_fps if cfg.fps is None or cfg.fps >= src_fps else float(cfg.fps)
    size = output_size(int(record["width"]), int(record["height"]), cfg)
    frames = [resize_frame(f, size) for _, f in
              iter_frames(path, record["start_time"], record["end_time"], fps=None if fps == src_fps else fps)]
    if not frames:
        raise VideoReadError(f"{path}: no frames decoded in [{record['start_time']}, {record['end_time']})")
    with tempfile.TemporaryDirectory(prefix="ea_data_clip_") as tmp:
        mp4 = write_video(Path(tmp) / "clip.mp4", np.stack(frames), fps=fps, crf=cfg.crf).read_bytes()
    meta = sample_json(record, fps=fps, num_frames=len(frames), width=size[0], height=size[1])
    return {"__key__": record["clip_id"], "mp4": mp4, "json": _json_bytes(meta)}


def encode_image_sample(record: dict[str, Any], input_dir: str | os.PathLike, cfg: ShardConfig) -> dict:
    """Read, resize and re-encode an image record: `{"__key__", "jpg" | "png", "json"}` (bytes)."""
    path = Path(input_dir) / record["source"]
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise VideoReadError(f"{path}: not a readable image")
    size = output_size(bgr.shape[1], bgr.shape[0], cfg)
    bgr = resize_frame(bgr, size)
    ext = "jpg" if path.suffix.lower() in (".jpg", ".jpeg") else "png"
    params = [cv2.IMWRITE_JPEG_QUALITY, cfg.jpeg_quality] if ext == "jpg" else []
    ok, buf = cv2.imencode("." + ext, bgr, params)
    if not ok:
        raise VideoReadError(f"{path}: could not encode the image as {ext}")
    meta = sample_json(record, fps=0.0, num_frames=1, width=size[0], height=size[1])
    return {"__key__": record["clip_id"], ext: buf.tobytes(), "json": _json_bytes(meta)}


def encode_sample(record: dict[str, Any], input_dir: str | os.PathLike, cfg: ShardConfig) -> dict | str:
    """Encode one kept record; returns the sample dict, or an error message if the source is unreadable."""
    try:
        if record.get("type") == "image":
            return encode_image_sample(record, input_dir, cfg)
        return encode_video_sample(record, input_dir, cfg)
    except (VideoReadError, OSError, ValueError) as e:
        return f"{type(e).__name__}: {e}"


def _json_bytes(obj: dict) -> bytes:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False).encode("utf-8")


# ---------------------------------------------------------------------------------------- writing


class ShardWriter:
    """Writes samples into `out_dir/<prefix>NNNNNN.tar`, one temp file per shard renamed when complete.

    `on_shard_done(name, keys, nbytes)` is called after each rename (the pipeline logs it to resume).
    Used as a context manager, an exception discards the unfinished shard and keeps finished ones.
    """

    def __init__(self, out_dir: str | os.PathLike, prefix: str = "shard-", max_count: int = 1000,
                 max_bytes: int = 1 << 30, start_index: int = 0,
                 on_shard_done: Callable[[str, list[str], int], None] | None = None):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.prefix, self.max_count, self.max_bytes = prefix, max_count, max_bytes
        self.index = start_index
        self.on_shard_done = on_shard_done
        self._tar = self._file = None
        self._keys: list[str] = []
        self.written: list[str] = []

    def name(self, index: int) -> str:
        return f"{self.prefix}{index:06d}.tar"

    def _open(self):
        self._file = AtomicFile(self.out_dir / self.name(self.index), "wb")
        self._tar = wds.TarWriter(self._file.file, encoder=False, mtime=0, user="ea_data", group="ea_data",
                                  mode=0o444)
        self._keys = []

    def write(self, sample: dict) -> str:
        """Add one sample (`__key__` + bytes members); returns the name of the shard it went into."""
        # A member takes a 512-byte header plus its data padded to 512; closing adds 1 KiB.
        size = sum(512 + -(-len(v) // 512) * 512 for k, v in sample.items() if k != "__key__")
        if self._tar is not None and (len(self._keys) >= self.max_count
                                      or self._tar.tarstream.offset + size + 1024 > self.max_bytes):
            self._finish()
        if self._tar is None:
            self._open()
        self._tar.write(sample)
        self._keys.append(sample["__key__"])
        name = self.name(self.index)
        if len(self._keys) >= self.max_count:  # complete it now rather than when the next sample comes
            self._finish()
        return name

    def _finish(self):
        self._tar.close()  # writes the end-of-archive blocks
        nbytes = self._file.file.tell()
        name = self._file.commit().name
        self.written.append(name)
        if self.on_shard_done is not None:
            self.on_shard_done(name, list(self._keys), nbytes)
        self._tar = self._file = None
        self.index += 1

    def close(self):
        """Complete the open shard (if it holds samples)."""
        if self._tar is not None:
            self._finish()

    def abort(self):
        """Discard the unfinished shard."""
        if self._tar is not None:
            try:
                self._tar.close()  # flush tarfile's buffer now, not in its __del__ on a closed file
            finally:
                self._file.discard()
            self._tar = self._file = None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _records_digest(records: list[dict]) -> str:
    """Digest of what a shard's content depends on (manifest fields, not where it was written)."""
    h = hashlib.sha1()
    for r in records:
        h.update(_json_bytes({k: v for k, v in r.items() if k not in ("shard", "key")}))
    return h.hexdigest()[:16]


def _serial_map(fn: Callable, items: Iterable) -> Iterator:
    return map(fn, items)


def write_shards(records: Iterable[dict], input_dir: str | os.PathLike, output_dir: str | os.PathLike,
                 cfg: ShardConfig | None = None, prefix: str = "", log_path: str | os.PathLike | None = None,
                 ordered_map: Callable[[Callable, Iterable], Iterator] | None = None,
                 progress: bool = True) -> list[dict]:
    """Write every kept record into `output_dir/shards/{prefix}{video,image}-NNNNNN.tar`.

    Returns all records in manifest order with `shard` (relative to `output_dir`) and `key` set on
    the written ones; a kept clip whose source can no longer be decoded becomes an `"error"` record.
    `ordered_map(fn, items)` encodes samples (it must yield results in input order, e.g. a process
    pool's `map`); shards are written in order by this process.

    With `log_path`, each completed shard is appended to that log; a later call with the same
    records and config skips the shards the log lists (and whose files exist) and continues after
    them, so an interrupted stage resumes. If the records or config changed, the logged shards are
    deleted and rewritten.
    """
    cfg = cfg or ShardConfig()
    output_dir = Path(output_dir)
    shard_dir = output_dir / "shards"
    ordered_map = ordered_map or _serial_map
    records = sorted((dict(r) for r in records), key=sort_key)
    for r in records:
        r["shard"] = r["key"] = None
    log = _ShardLog(log_path, cfg.fingerprint(), shard_dir)
    for kind in ("video", "image"):
        todo = [r for r in records if r.get("status") == "kept" and r.get("type", "video") == kind]
        if not todo:
            log.drop_kind(kind, prefix)
            continue
        done, next_index = log.resume(kind, prefix, todo)
        for r, shard in done:
            r["shard"], r["key"] = f"shards/{shard}", r["clip_id"]
        rest = todo[len(done):]
        bar = progress_bar(total=len(todo), initial=len(done), desc=f"shard {kind}s", unit="clip" if kind == "video"
                   else "image", disable=not progress, leave=False)
        encode = functools.partial(encode_sample, input_dir=str(input_dir), cfg=cfg)
        pending: list[dict] = []

        def done_cb(name, keys, nbytes, kind=kind, pending=pending):
            batch = pending[:len(keys)]
            del pending[:len(keys)]
            log.add(kind, prefix, name, keys, nbytes, _records_digest(batch))

        with ShardWriter(shard_dir, f"{prefix}{kind}-", cfg.max_count, cfg.max_bytes, next_index,
                         on_shard_done=done_cb) as writer:
            for r, sample in zip(rest, ordered_map(encode, rest), strict=True):
                if isinstance(sample, str):
                    r.update(status="error", error=sample, reject_reason=None)
                else:
                    pending.append({k: v for k, v in r.items()})
                    shard = writer.write(sample)
                    r["shard"], r["key"] = f"shards/{shard}", r["clip_id"]
                bar.update()
        log.drop_after(kind, prefix, writer.index)
        bar.close()
    return records


class _ShardLog:
    """Completed shards of one stage run: jsonl lines `{kind, prefix, shard, keys, bytes, digest, config}`."""

    def __init__(self, path, config_fp: str, shard_dir: Path):
        self.path = Path(path) if path is not None else None
        self.config_fp = config_fp
        self.shard_dir = shard_dir
        self.entries = read_jsonl(self.path, allow_partial=True) if self.path and self.path.exists() else []

    def _of(self, kind, prefix):
        return [e for e in self.entries if e["kind"] == kind and e["prefix"] == prefix]

    def resume(self, kind: str, prefix: str, todo: list[dict]) -> tuple[list[tuple[dict, str]], int]:
        """Records already in valid logged shards (a prefix of `todo`) and the next shard index."""
        done, pos, index = [], 0, 0
        for e in self._of(kind, prefix):
            batch = todo[pos:pos + len(e["keys"])]
            valid = (e["config"] == self.config_fp and [r["clip_id"] for r in batch] == e["keys"]
                     and _records_digest([{**r, "shard": None, "key": None} for r in batch]) == e["digest"]
                     and (self.shard_dir / e["shard"]).exists()
                     and e["shard"] == f"{prefix}{kind}-{index:06d}.tar")
            if not valid:
                break
            done += [(r, e["shard"]) for r in batch]
            pos += len(batch)
            index += 1
        self.drop_after(kind, prefix, index)
        return done, index

    def drop_after(self, kind: str, prefix: str, index: int):
        """Forget (and delete) logged shards of this series numbered `index` or higher."""
        stale = [e for e in self._of(kind, prefix) if int(e["shard"][-10:-4]) >= index]
        if not stale:
            return
        for e in stale:
            (self.shard_dir / e["shard"]).unlink(missing_ok=True)
        self.entries = [e for e in self.entries if all(e is not s for s in stale)]
        if self.path is not None:
            write_jsonl(self.path, self.entries)

    def drop_kind(self, kind: str, prefix: str):
        self.drop_after(kind, prefix, 0)

    def add(self, kind, prefix, name, keys, nbytes, digest):
        e = {"kind": kind, "prefix": prefix, "shard": name, "keys": keys, "bytes": nbytes, "digest": digest,
             "config": self.config_fp}
        self.entries.append(e)
        if self.path is not None:
            append_jsonl(self.path, e)
