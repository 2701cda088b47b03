"""The per-file work of the curation pipeline, run in worker processes.

:func:`process_file` splits and scores one input file (split + score in one decode);
:func:`score_source` rescores given clips of one file (the score stage alone). Scorers are built once
per worker process (:func:`worker_scorers`) and reused for every later file.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from ea_data.curation.config import InputError, ScoreConfig, SplitConfig
from ea_data.manifest import new_record, sort_key
from ea_data.scoring import build_scorers, score_clip, score_frames, split_and_score
from ea_data.scoring.frames import DEFAULT_MAX_SIDE, fit_max_side
from ea_vae.video_io import VideoReadError, video_info

_WORKER: dict[str, Any] = {"scorers": {}, "initialized": False}


def init_worker(quiet_scorers: bool = True) -> None:
    """Set up a worker process once: one thread per library (the pool supplies the parallelism)."""
    if _WORKER["initialized"]:
        return
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    if quiet_scorers:
        # The parent reports skipped scorers once, from the results; don't repeat it per worker.
        logging.getLogger("ea_data.scoring").setLevel(logging.ERROR)
    _WORKER["initialized"] = True


def worker_scorers(cfg: ScoreConfig):
    """The scorers of `cfg`, built on first use in this process and reused for every later file."""
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
            entry["records"], entry["skipped"] = _image_records(path, task.source, scorers)
        else:
            entry["records"], entry["skipped"] = _video_records(path, task, scorers)
    except Exception as e:  # noqa: BLE001 - any failure on one input is recorded, never fatal to the run
        entry["records"] = [_error_record(task.source, task.kind, e)]
    return entry


def _error_message(e: BaseException) -> str:
    return str(e) if isinstance(e, VideoReadError) else f"{type(e).__name__}: {e}"


def _error_record(source: str, kind: str, e: BaseException) -> dict:
    return new_record(source, type=kind, status="error", error=_error_message(e) or type(e).__name__)


def _scores(scores: dict) -> dict:
    return {k: scores.get(k) for k in ("motion_score", "text_area", "aesthetic_score")}


def _video_records(path: Path, task: FileTask, scorers) -> tuple[list[dict], dict]:
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


def _image_records(path: Path, source: str, scorers) -> tuple[list[dict], dict]:
    """An image is one record; text and aesthetic scorers run on it (motion needs two frames)."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise OSError(f"{path}: not a readable image")
    rgb = fit_max_side(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), DEFAULT_MAX_SIDE)
    scores = score_frames(np.ascontiguousarray(rgb)[None], scorers)
    scores["motion_score"] = None
    rec = new_record(source, type="image", width=bgr.shape[1], height=bgr.shape[0], status="pending",
                     **_scores(scores))
    return [rec], scorers.skipped


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
                scores = _scores(_image_records(path, task.source, scorers)[0][0])
            else:
                scores = _scores(score_clip(path, start, end, scorers=scorers, sample_fps=task.score.sample_fps))
            out["scores"].append(scores)
            out["errors"].append(None)
        except Exception as e:  # noqa: BLE001 - one unreadable clip is recorded, the stage goes on
            out["scores"].append(None)
            out["errors"].append(_error_message(e))
    return out
