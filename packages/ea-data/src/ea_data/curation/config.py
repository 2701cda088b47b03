"""Settings of the curation pipeline: scene splitting, scoring, and the whole run (which part of the inputs)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ea_core.files import NON_NEGATIVE, POSITIVE, check_fields
from ea_data.filters import FilterConfig
from ea_data.scenes import DEFAULT_DETECTOR, DETECTORS
from ea_data.shards import ShardConfig


class InputError(ValueError):
    """Bad pipeline input or arguments (missing folder, bad --shard spec...); the CLI exits with 2."""


@dataclass
class SplitConfig:
    """Scene detection and clip bounds (see :func:`ea_data.scenes.detect_scenes`, `split_scene_clips`)."""

    detector: str = DEFAULT_DETECTOR
    threshold: float | None = None
    min_scene_len: int = 15
    min_seconds: float = 3.0
    max_seconds: float = 10.0
    split_long: bool = True

    def __post_init__(self):
        check_fields(self, {"threshold": NON_NEGATIVE, "min_scene_len": POSITIVE, "min_seconds": NON_NEGATIVE,
                            "max_seconds": POSITIVE}, error=InputError)
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
        check_fields(self, {"sample_fps": POSITIVE}, error=InputError)
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
        check_fields(self, error=InputError)  # types; the ranges below
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
