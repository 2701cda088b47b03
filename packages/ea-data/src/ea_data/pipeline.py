"""The curation pipeline: split -> score -> filter -> shard over a folder of videos and images.

    summary = run("raw/", "curated/", PipelineConfig(workers=8))

writes ``curated/manifest.jsonl`` (one :class:`ea_data.manifest.ClipRecord` per detected scene or
scene piece, kept or rejected with its reason; one ``"error"`` record per unreadable file; one record
per image), ``curated/shards/*.tar`` (WebDataset, see :mod:`ea_data.shards`) and
``curated/summary.json``.

Each video is decoded once for scene detection and scoring together
(:func:`ea_data.scoring.split_and_score`). Files are processed in parallel (a local process pool,
or Ray with :mod:`ea_data.ray_runner`), scorers are built once per worker.

Cluster use: ``shard_index / num_shards`` (``--shard i/n``) processes a deterministic part of the
input files (by a hash of each relative path, so adding files does not move the others). Each part
writes ``parts/manifest-IIIII-of-NNNNN.jsonl`` and its own shard series; when the last part finishes,
``manifest.jsonl`` is merged from all parts.

Resume: every finished file is appended to ``work/scan-IIIII-of-NNNNN.jsonl`` (fsynced) with its
unfiltered records; a rerun skips the files found there (same size, mtime and split/score config),
re-applies the filters (changing thresholds re-filters without re-scoring) and continues the shard
stage after its last completed shard. The manifest is sorted, so an interrupted and resumed run ends
with the same manifest as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ea_data.filters import FilterConfig, filter_records
from ea_data.manifest import append_jsonl, new_record, read_jsonl, sort_key, write_jsonl
from ea_data.shards import IMAGE_EXTS, ShardConfig, write_shards

logger = logging.getLogger("ea_data.pipeline")

VIDEO_EXTS = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".ts",
              ".3gp")


class InputError(ValueError):
    """Bad pipeline input or arguments (missing folder, bad --shard spec...); the CLI exits with 2."""


# ------------------------------------------------------------------------------------------ config


@dataclass
class SplitConfig:
    """Scene detection and clip bounds (see :func:`ea_data.scenes.detect_scenes`, `split_scene_clips`)."""

    detector: str = "adaptive+histogram"
    threshold: float | None = None
    min_scene_len: int = 15
    min_seconds: float = 3.0
    max_seconds: float = 10.0
    split_long: bool = True

    def __post_init__(self):
        from ea_data.scenes import DETECTORS

        if self.detector not in DETECTORS:
            raise InputError(f"detector must be one of {DETECTORS}, got {self.detector!r}")
        if not 0 <= self.min_seconds <= self.max_seconds or self.max_seconds <= 0:
            raise InputError(f"need 0 <= min_seconds <= max_seconds, got {self.min_seconds}, {self.max_seconds}")
        if self.min_scene_len < 1:
            raise InputError(f"min_scene_len must be >= 1 frame, got {self.min_scene_len}")


@dataclass
class ScoreConfig:
    """Scorers and their settings (see :func:`ea_data.scoring.build_scorers`). Weight paths are local."""

    scorers: tuple[str, ...] = ("motion", "text", "aesthetic")
    sample_fps: float = 2.0
    motion_backend: str = "opencv"
    raft_weights: str | None = None
    raft_model: str = "small"
    clip_model: str = "ViT-L-14"
    clip_weights: str | None = None
    aesthetic_head: str | None = None
    device: str = "cpu"

    def __post_init__(self):
        self.scorers = tuple(self.scorers)
        bad = [s for s in self.scorers if s not in ("motion", "text", "aesthetic")]
        if bad:
            raise InputError(f"unknown scorer(s) {bad}; choose from motion, text, aesthetic")
        if not self.sample_fps > 0:
            raise InputError(f"sample_fps must be > 0, got {self.sample_fps}")
        if self.motion_backend not in ("opencv", "raft"):
            raise InputError(f"motion_backend must be 'opencv' or 'raft', got {self.motion_backend!r}")
        for name in ("raft_weights", "aesthetic_head"):
            p = getattr(self, name)
            if p is not None and not Path(p).is_file():
                raise InputError(f"{name}: {p} is not a file")

    def build_kwargs(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k not in ("scorers", "sample_fps")}


@dataclass
class PipelineConfig:
    """All pipeline settings. `shard_index / num_shards` selects this process's part of the inputs."""

    split: SplitConfig = field(default_factory=SplitConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    filter: FilterConfig = field(default_factory=FilterConfig)
    shard: ShardConfig = field(default_factory=ShardConfig)
    workers: int = 1
    shard_index: int = 0
    num_shards: int = 1
    write_shards: bool = True
    progress: bool = True

    def __post_init__(self):
        check_part(self.shard_index, self.num_shards)
        if self.workers < 1:
            raise InputError(f"workers must be >= 1, got {self.workers}")

    def scan_fingerprint(self) -> str:
        """Identifies everything a file's split + score result depends on."""
        blob = json.dumps({"split": asdict(self.split), "score": asdict(self.score)}, sort_keys=True)
        return hashlib.sha1(blob.encode()).hexdigest()[:16]


def check_part(index: int, count: int) -> None:
    if count < 1 or not 0 <= index < count:
        raise InputError(f"shard must be i/n with 0 <= i < n, got {index}/{count}")


def parse_part(spec: str) -> tuple[int, int]:
    """Parse a ``--shard i/n`` spec into `(i, n)`."""
    try:
        i, n = (int(x) for x in spec.split("/"))
    except ValueError:
        raise InputError(f"--shard expects i/n (e.g. 0/4), got {spec!r}") from None
    check_part(i, n)
    return i, n


# ------------------------------------------------------------------------------------------ inputs


@dataclass
class Inputs:
    """Files under an input folder, as sorted posix paths relative to it."""

    videos: list[str]
    images: list[str]
    ignored: list[str]


def media_kind(path: str) -> str | None:
    ext = os.path.splitext(path)[1].lower()
    return "video" if ext in VIDEO_EXTS else "image" if ext in IMAGE_EXTS else None


def list_inputs(input_dir: str | os.PathLike, exclude: Iterable[str | os.PathLike] = ()) -> Inputs:
    """Videos and images under `input_dir` (recursive, by extension; hidden files and `exclude` skipped).

    A file is classified by its extension only: a text file named `.mp4` is a video input that will
    fail to decode and be recorded as an error.
    """
    root = Path(input_dir)
    if not root.is_dir():
        raise InputError(f"{root}: input folder does not exist")
    skip = {Path(e).resolve() for e in exclude}
    out = Inputs([], [], [])
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        dirnames[:] = sorted(n for n in dirnames if not n.startswith(".") and (d / n).resolve() not in skip)
        for name in filenames:
            if name.startswith("."):
                continue
            rel = (d / name).relative_to(root).as_posix()
            kind = media_kind(name)
            {"video": out.videos, "image": out.images, None: out.ignored}[kind].append(rel)
    for lst in (out.videos, out.images, out.ignored):
        lst.sort()
    return out


def part_of(source: str, count: int) -> int:
    """The part (0..count-1) a relative path belongs to: a stable hash, independent of other files."""
    return int.from_bytes(hashlib.sha1(source.encode("utf-8")).digest()[:8], "big") % count


def select_part(sources: Iterable[str], index: int, count: int) -> list[str]:
    """The sources of part `index` of `count` (every source is in exactly one part)."""
    check_part(index, count)
    return [s for s in sources if part_of(s, count) == index]


# ------------------------------------------------------------------------------------------ workers

_WORKER: dict[str, Any] = {"scorers": {}, "initialized": False}


def init_worker(quiet_scorers: bool = True) -> None:
    """Set up a worker process once: one thread per library (the pool supplies the parallelism)."""
    if _WORKER["initialized"]:
        return
    import cv2
    import torch

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    if quiet_scorers:
        # The parent reports skipped scorers once, from the results; don't repeat it per worker.
        logging.getLogger("ea_data.scoring").setLevel(logging.ERROR)
    _WORKER["initialized"] = True


def worker_scorers(cfg: ScoreConfig):
    """The scorers of `cfg`, built on first use in this process and reused for every later file."""
    from ea_data.scoring import build_scorers

    key = json.dumps(asdict(cfg), sort_keys=True)
    if key not in _WORKER["scorers"]:
        _WORKER["scorers"][key] = build_scorers(cfg.scorers, **cfg.build_kwargs())
    return _WORKER["scorers"][key]


def check_scorers(cfg: ScoreConfig):
    """Build this process's scorers now; a setup failure becomes an :class:`InputError` naming it."""
    try:
        return worker_scorers(cfg)
    except Exception as e:  # noqa: BLE001 - whatever the loader raised, it is a setup problem
        raise InputError(f"scorer setup failed ({type(e).__name__}: {e})") from e


@dataclass(frozen=True)
class FileTask:
    """One input file for :func:`process_file` (picklable, so it can go to any worker)."""

    source: str
    kind: str
    input_dir: str
    split: SplitConfig
    score: ScoreConfig
    fingerprint: str


def file_stamp(path: str | os.PathLike) -> dict[str, int]:
    st = os.stat(path)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def process_file(task: FileTask) -> dict[str, Any]:
    """Split and score one file: returns its work-log entry `{"source", "records", "skipped", ...}`.

    Records are unfiltered: clips are `"pending"` with their scores, scenes outside the length bounds
    `"rejected"` (too_short / too_long); an unreadable file gives one `"error"` record.
    """
    path = Path(task.input_dir) / task.source
    entry = {"source": task.source, "kind": task.kind, "config": task.fingerprint, "skipped": {}}
    # Outside the per-file error handling: a scorer that cannot be built (a weight file that does not
    # fit) is a configuration error that must stop the run, not be recorded against every file.
    scorers = worker_scorers(task.score)
    try:
        entry.update(file_stamp(path))
    except OSError as e:
        entry.update(size=-1, mtime_ns=-1)
        entry["records"] = [_error_record(task.source, task.kind, e)]
        return entry
    try:
        if task.kind == "image":
            entry["records"], entry["skipped"] = _image_records(path, task, scorers)
        else:
            entry["records"], entry["skipped"] = _video_records(path, task, scorers)
    except Exception as e:  # noqa: BLE001 - any failure on one input is recorded, never fatal to the run
        entry["records"] = [_error_record(task.source, task.kind, e)]
    return entry


def _error_record(source: str, kind: str, e: BaseException) -> dict:
    msg = str(e) if type(e).__name__ == "VideoReadError" else f"{type(e).__name__}: {e}"
    return new_record(source, type=kind, status="error", error=msg or type(e).__name__)


def _scores(scores: dict) -> dict:
    return {k: scores.get(k) for k in ("motion_score", "text_area", "aesthetic_score")}


def _video_records(path: Path, task: FileTask, scorers) -> tuple[list[dict], dict]:
    from ea_data.scoring import split_and_score
    from ea_vae.video_io import video_info

    info = video_info(path)
    s = task.split
    scan = split_and_score(path, scorers=scorers, sample_fps=task.score.sample_fps,
                           detector=s.detector, threshold=s.threshold, min_scene_len=s.min_scene_len,
                           min_seconds=s.min_seconds, max_seconds=s.max_seconds, split_long=s.split_long)
    common = {"fps": info.fps, "width": info.width, "height": info.height}
    records = []
    for c in scan.clips:
        records.append(new_record(task.source, **_span(c.clip), **common, **_scores(c.scores), status="pending"))
    for d in scan.dropped:
        records.append(new_record(task.source, **_span(d.scene), **common, status="rejected",
                                  reject_reason=d.reason))
    return sorted(records, key=sort_key), scan.skipped


def _span(scene) -> dict:
    return {"start_frame": scene.start_frame, "end_frame": scene.end_frame,
            "start_time": round(scene.start_time, 6), "end_time": round(scene.end_time, 6)}


def _image_records(path: Path, task: FileTask, scorers) -> tuple[list[dict], dict]:
    """An image is one record; text and aesthetic scorers run on it (motion needs two frames)."""
    import cv2
    import numpy as np

    from ea_data.scoring import score_frames
    from ea_data.scoring.frames import DEFAULT_MAX_SIDE, fit_max_side

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise OSError(f"{path}: not a readable image")
    rgb = fit_max_side(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), DEFAULT_MAX_SIDE)
    scores = score_frames(np.ascontiguousarray(rgb)[None], scorers)
    scores["motion_score"] = None
    rec = new_record(task.source, type="image", width=bgr.shape[1], height=bgr.shape[0], status="pending",
                     **_scores(scores))
    return [rec], scorers.skipped


# ------------------------------------------------------------------------------------------ executors


class LocalExecutor:
    """Maps a function over items in-process (`workers == 1`) or in a process pool (`workers > 1`).

    At most `2 * workers` items are in flight, so huge input lists do not pile up in memory.
    """

    def __init__(self, workers: int = 1, start_method: str = "forkserver"):
        self.workers = max(1, int(workers))
        self.start_method = start_method
        self._pool: ProcessPoolExecutor | None = None

    def _get_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            import multiprocessing as mp

            ctx = mp.get_context(self.start_method)
            if self.start_method == "forkserver":
                # The server imports the heavy modules once; each worker is then a cheap fork of it
                # (plain fork would copy this process's threads and locks; spawn re-imports per worker).
                ctx.set_forkserver_preload(["ea_data.pipeline", "ea_data.scoring", "cv2", "torch"])
            self._pool = ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=init_worker)
        return self._pool

    def imap_unordered(self, fn: Callable, items: Iterable) -> Iterator:
        """Results in completion order."""
        if self.workers == 1:
            yield from map(fn, items)
            return
        pool, it, pending = self._get_pool(), iter(items), set()
        for item in it:
            pending.add(pool.submit(fn, item))
            if len(pending) >= 2 * self.workers:
                break
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in done:
                nxt = next(it, _END)
                if nxt is not _END:
                    pending.add(pool.submit(fn, nxt))
                yield f.result()

    def imap(self, fn: Callable, items: Iterable) -> Iterator:
        """Results in input order."""
        if self.workers == 1:
            yield from map(fn, items)
            return
        from collections import deque

        pool, it, queue = self._get_pool(), iter(items), deque()
        for item in it:
            queue.append(pool.submit(fn, item))
            if len(queue) >= 2 * self.workers:
                break
        while queue:
            result = queue.popleft().result()
            nxt = next(it, _END)
            if nxt is not _END:
                queue.append(pool.submit(fn, nxt))
            yield result

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


_END = object()


# ------------------------------------------------------------------------------------------ paths


def part_name(index: int, count: int) -> str:
    return f"{index:05d}-of-{count:05d}"


def output_paths(output_dir: str | os.PathLike, index: int = 0, count: int = 1) -> dict[str, Path]:
    out = Path(output_dir)
    p = part_name(index, count)
    return {
        "manifest": out / "manifest.jsonl",
        "part_manifest": out / "manifest.jsonl" if count == 1 else out / "parts" / f"manifest-{p}.jsonl",
        "scan_log": out / "work" / f"scan-{p}.jsonl",
        "shard_log": out / "work" / f"shards-{p}.jsonl",
        "summary": out / "summary.json",
        "shard_prefix": "" if count == 1 else f"p{index:05d}-",
    }


# ------------------------------------------------------------------------------------------ stages


def scan_files(sources: list[tuple[str, str]], input_dir: str | os.PathLike, cfg: PipelineConfig,
               executor, log_path: Path | None = None,
               on_file_done: Callable[[dict], None] | None = None) -> tuple[list[dict], dict]:
    """Split + score `sources` (`(relative path, "video" | "image")`), resuming from `log_path`.

    Returns `(entries, stats)`: one work-log entry per source, in the order of `sources`, and
    `{"resumed": n, "processed": m}`. `on_file_done(entry)` is called after each new entry is logged.
    """
    from tqdm import tqdm

    fp = cfg.scan_fingerprint()
    done: dict[str, dict] = {}
    if log_path is not None and log_path.exists():
        for e in read_jsonl(log_path, allow_partial=True):
            done[e["source"]] = e  # the last entry of a source wins
    input_dir = Path(input_dir)
    entries: dict[str, dict] = {}
    todo = []
    for src, kind in sources:
        old = done.get(src)
        if old is not None and old.get("config") == fp and _same_stamp(input_dir / src, old):
            entries[src] = old
        else:
            todo.append(FileTask(src, kind, str(input_dir), cfg.split, cfg.score, fp))
    if log_path is not None and len(done) > len(entries):
        # Drop stale lines (other config, changed files, files no longer listed) so the log stays small.
        write_jsonl(log_path, [entries[s] for s, _ in sources if s in entries])
    bar = tqdm(total=len(sources), initial=len(entries), desc="split+score", unit="file",
               disable=not cfg.progress)
    for entry in executor.imap_unordered(process_file, todo):
        if log_path is not None:
            append_jsonl(log_path, entry)
        entries[entry["source"]] = entry
        bar.update()
        if on_file_done is not None:
            on_file_done(entry)
    bar.close()
    stats = {"resumed": len(sources) - len(todo), "processed": len(todo)}
    return [entries[s] for s, _ in sources], stats


def _same_stamp(path: Path, entry: dict) -> bool:
    try:
        return file_stamp(path) == {"size": entry.get("size"), "mtime_ns": entry.get("mtime_ns")}
    except OSError:
        return entry.get("size") == -1  # still missing: the logged error still holds


def apply_filter_stage(records: list[dict], cfg: FilterConfig, progress: bool = True) -> list[dict]:
    """Filter stage over manifest records (with a progress bar), sorted into manifest order."""
    from tqdm import tqdm

    out = filter_records(tqdm(records, desc="filter", unit="clip", disable=not progress, leave=False), cfg)
    return sorted(out, key=sort_key)


def merge_parts(output_dir: str | os.PathLike, count: int) -> Path | None:
    """Write `manifest.jsonl` from all part manifests once all `count` exist; returns it (or None)."""
    paths = [output_paths(output_dir, i, count)["part_manifest"] for i in range(count)]
    if not all(p.exists() for p in paths):
        return None
    records = [r for p in paths for r in read_jsonl(p)]
    return write_jsonl(output_paths(output_dir)["manifest"], sorted(records, key=sort_key))


# ------------------------------------------------------------------------------------------ run


def run(input_dir: str | os.PathLike, output_dir: str | os.PathLike, config: PipelineConfig | None = None,
        executor=None, on_file_done: Callable[[dict], None] | None = None) -> dict:
    """Split -> score -> filter -> shard every video and image under `input_dir` into `output_dir`.

    Returns the summary of this part (the whole run unless `config.num_shards > 1`); the summary
    of the merged manifest is written to `output_dir/summary.json` once all parts are done.
    `executor` maps the per-file work (default: :class:`LocalExecutor` with `config.workers`; see
    :mod:`ea_data.ray_runner` for Ray); `on_file_done(entry)` is called after each file is logged.
    """
    cfg = config or PipelineConfig()
    t0 = time.time()
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    inputs = list_inputs(input_dir, exclude=[output_dir])
    paths = output_paths(output_dir, cfg.shard_index, cfg.num_shards)
    sources = _part_sources(inputs, cfg.shard_index, cfg.num_shards)
    own_executor = executor is None
    executor = executor or LocalExecutor(cfg.workers)
    if isinstance(executor, LocalExecutor) and executor.workers == 1:
        check_scorers(cfg.score)  # built here once and reused for every file
    try:
        entries, stats = scan_files(sources, input_dir, cfg, executor, paths["scan_log"], on_file_done)
        records = apply_filter_stage([r for e in entries for r in e["records"]], cfg.filter, cfg.progress)
        skipped = {k: v for e in entries for k, v in (e.get("skipped") or {}).items()}
        summary = shard_stage(records, input_dir, output_dir, cfg, executor, write=cfg.write_shards,
                              extra={"ignored_files": len(inputs.ignored), "skipped_scorers": skipped})
    finally:
        if own_executor:
            executor.close()
    summary.update(files_resumed=stats["resumed"], files_processed=stats["processed"],
                   seconds=round(time.time() - t0, 3))
    return summary


def _part_sources(inputs: Inputs, index: int, count: int) -> list[tuple[str, str]]:
    sources = sorted([(s, "video") for s in inputs.videos] + [(s, "image") for s in inputs.images])
    return [(s, k) for s, k in sources if part_of(s, count) == index]


def split_stage(input_dir: str | os.PathLike, config: PipelineConfig | None = None, executor=None) -> list[dict]:
    """Split stage alone: scene records (no scores) for this part's files, in manifest order.

    Clips within the length bounds are `"pending"`; scenes outside them `"rejected"`; unreadable
    files `"error"`; images `"pending"`.
    """
    cfg = config or PipelineConfig()
    cfg = replace(cfg, score=replace(cfg.score, scorers=()))
    inputs = list_inputs(input_dir)
    with _executor(executor, cfg) as ex:
        entries, _ = scan_files(_part_sources(inputs, cfg.shard_index, cfg.num_shards), input_dir, cfg, ex)
    return sorted((r for e in entries for r in e["records"]), key=sort_key)


@dataclass(frozen=True)
class ScoreTask:
    """The clips of one source to score with :func:`score_source`."""

    source: str
    kind: str
    input_dir: str
    score: ScoreConfig
    clips: tuple[tuple[float, float], ...]


def score_source(task: ScoreTask) -> dict[str, Any]:
    """Score each `(start_time, end_time)` clip of one file (one decode per clip).

    Returns `{"scores": [dict | None], "errors": [str | None], "skipped": {...}}` aligned with
    `task.clips`.
    """
    path = Path(task.input_dir) / task.source
    out: dict[str, Any] = {"scores": [], "errors": [], "skipped": {}}
    try:
        scorers = worker_scorers(task.score)
        out["skipped"] = dict(scorers.skipped)
    except Exception as e:  # noqa: BLE001 - reported per clip below
        out["scores"] = [None] * len(task.clips)
        out["errors"] = [f"{type(e).__name__}: {e}"] * len(task.clips)
        return out
    for start, end in task.clips:
        try:
            if task.kind == "image":
                rec = _image_records(path, FileTask(task.source, "image", task.input_dir, SplitConfig(),
                                                    task.score, ""), scorers)[0][0]
                scores = _scores(rec)
            else:
                from ea_data.scoring import score_clip

                scores = _scores(score_clip(path, start, end, scorers=scorers, sample_fps=task.score.sample_fps))
            out["scores"].append(scores)
            out["errors"].append(None)
        except Exception as e:  # noqa: BLE001 - one unreadable clip is recorded, the stage goes on
            out["scores"].append(None)
            out["errors"].append(str(e) if type(e).__name__ == "VideoReadError" else f"{type(e).__name__}: {e}")
    return out


def needs_scores(record: dict) -> bool:
    """Records the score stage (re)scores: all but errors and clips the split stage rejected."""
    from ea_data.filters import FILTER_REASONS

    if record["status"] == "error":
        return False
    return record["status"] != "rejected" or record.get("reject_reason") in FILTER_REASONS


def score_stage(records: list[dict], input_dir: str | os.PathLike, config: PipelineConfig | None = None,
                executor=None) -> list[dict]:
    """Score stage alone: (re)score this part's records from their sources; returns them `"pending"`.

    Records of other parts (by source) are left out of the result; merge the parts afterwards.
    A clip that cannot be decoded becomes an `"error"` record.
    """
    from tqdm import tqdm

    cfg = config or PipelineConfig()
    mine = [dict(r) for r in records if part_of(r["source"], cfg.num_shards) == cfg.shard_index]
    by_source: dict[str, list[dict]] = {}
    for r in mine:
        if needs_scores(r):
            by_source.setdefault(r["source"], []).append(r)
    tasks = [ScoreTask(src, rs[0].get("type", "video"), str(input_dir), cfg.score,
                       tuple((r["start_time"], r["end_time"]) for r in rs)) for src, rs in by_source.items()]
    skipped: dict[str, str] = {}
    with _executor(executor, cfg) as ex:
        bar = tqdm(total=len(tasks), desc="score", unit="file", disable=not cfg.progress)
        results = {}
        for task, res in zip(tasks, ex.imap(score_source, tasks), strict=True):
            results[task.source] = res
            bar.update()
        bar.close()
    for src, rs in by_source.items():
        res = results[src]
        skipped.update(res["skipped"])
        for r, scores, err in zip(rs, res["scores"], res["errors"], strict=True):
            if err is not None:
                r.update(status="error", error=err, reject_reason=None)
            else:
                r.update(scores, status="pending", reject_reason=None, error=None)
    for name, reason in skipped.items():
        logger.warning("scorer %r left out: %s", name, reason)
    return sorted(mine, key=sort_key)


def shard_stage(records: list[dict], input_dir: str | os.PathLike, output_dir: str | os.PathLike,
                config: PipelineConfig | None = None, executor=None, write: bool = True,
                extra: dict | None = None) -> dict:
    """Shard stage: write this part's kept records into `output_dir/shards`, then its manifest.

    Writes the part manifest (or `manifest.jsonl` when there is one part), merges `manifest.jsonl`
    once every part exists, and returns the summary of this part's records (plus `extra`).
    """
    cfg = config or PipelineConfig()
    output_dir = Path(output_dir)
    paths = output_paths(output_dir, cfg.shard_index, cfg.num_shards)
    records = sorted((r for r in records if part_of(r["source"], cfg.num_shards) == cfg.shard_index), key=sort_key)
    if write:
        with _executor(executor, cfg) as ex:
            records = write_shards(records, input_dir, output_dir, cfg.shard, prefix=paths["shard_prefix"],
                                   log_path=paths["shard_log"], ordered_map=ex.imap, progress=cfg.progress)
    write_jsonl(paths["part_manifest"], records)
    summary = {**summarize(records), **(extra or {}), "part": f"{cfg.shard_index}/{cfg.num_shards}"}
    if cfg.num_shards == 1 or merge_parts(output_dir, cfg.num_shards) is not None:
        full = {**summarize(read_jsonl(paths["manifest"])), **(extra or {})}
        _write_json(paths["summary"], full)
    return summary


class _executor:
    """Use the given executor, or a LocalExecutor of `cfg.workers` closed on exit."""

    def __init__(self, executor, cfg: PipelineConfig):
        self.given, self.cfg, self.own = executor, cfg, None

    def __enter__(self):
        if self.given is not None:
            return self.given
        self.own = LocalExecutor(self.cfg.workers)
        return self.own

    def __exit__(self, *exc):
        if self.own is not None:
            self.own.close()


def summarize(records: list[dict]) -> dict:
    """Counts from manifest records: files, errors, clips, kept hours, rejections per reason."""
    videos = {r["source"] for r in records if r.get("type", "video") == "video"}
    images = {r["source"] for r in records if r.get("type") == "image"}
    errors = sorted({r["source"] for r in records if r["status"] == "error" and r.get("end_frame", 0) == 0})
    clips = [r for r in records if r.get("type", "video") == "video" and r["source"] not in errors]

    def hours(rs):
        return round(sum(max(0.0, r["end_time"] - r["start_time"]) for r in rs) / 3600, 6)

    kept = [r for r in clips if r["status"] == "kept"]
    rejected = Counter(r["reject_reason"] for r in records if r["status"] == "rejected")
    return {
        "videos": len(videos), "images": len(images), "errors": len(errors), "error_files": errors,
        "clips": len(clips), "clips_kept": len(kept), "clip_errors": sum(r["status"] == "error" for r in clips),
        "hours_input": hours(clips), "hours_kept": hours(kept),
        "images_kept": sum(r["status"] == "kept" for r in records if r.get("type") == "image"),
        "rejected": dict(sorted(rejected.items())),
        "shards": len({r["shard"] for r in records if r.get("shard")}),
    }


def format_summary(s: dict) -> str:
    """Human-readable summary lines."""
    lines = [
        f"videos: {s['videos']}  images: {s['images']}  unreadable files: {s['errors']}"
        + (f"  ignored (not media): {s['ignored_files']}" if s.get("ignored_files") else ""),
        f"clips: {s['clips']} ({s['hours_input'] * 60:.2f} min), kept {s['clips_kept']} "
        f"({s['hours_kept']:.4f} h = {s['hours_kept'] * 60:.2f} min); images kept {s['images_kept']}",
        "rejected: " + (", ".join(f"{k} {v}" for k, v in s["rejected"].items()) or "none"),
    ]
    if s.get("shards"):
        lines.append(f"shards written: {s['shards']}")
    if s.get("error_files"):
        lines.append("unreadable: " + ", ".join(s["error_files"][:10]) + (" ..." if len(s["error_files"]) > 10
                                                                         else ""))
    for name, reason in (s.get("skipped_scorers") or {}).items():
        lines.append(f"scorer {name!r} left out: {reason}")
    if "files_resumed" in s:
        lines.append(f"files processed now: {s['files_processed']}, taken from the work log: {s['files_resumed']}")
    return "\n".join(lines)


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True))
    os.replace(tmp, path)
