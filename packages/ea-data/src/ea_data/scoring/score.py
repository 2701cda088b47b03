"""Scoring clips from frames decoded once: `build_scorers`, `score_clip`, and `split_and_score`.

- :func:`build_scorers` builds the scorers once per worker; a scorer whose weights (or optional
  package) are missing is logged once, listed in ``Scorers.skipped`` with the reason, and left out.
- :func:`score_clip` decodes one clip once (frames at `sample_fps`) and runs every scorer on them.
- :func:`split_and_score` decodes a whole video once: scene detection sees every frame, the grid
  frames at `sample_fps` are kept on the side, and each scene is split into clips and scored as soon
  as its closing cut is found (so memory holds at most one scene's sampled frames).

Score keys: "motion_score" (pixels per sampled step at a 256-px short side, see scoring.motion),
"text_area" (fraction of the frame, 0..1), "aesthetic_score" (predictor scale, about 1..10), plus
"num_sampled_frames". A requested scorer that was skipped gives None.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..scenes import DEFAULT_DETECTOR, DroppedScene, Scene, detect_scenes, split_scene_clips
from .frames import DEFAULT_MAX_SIDE, GridSampler, SampledFrames, sample_clip_frames
from .motion import DEFAULT_WORK_SIZE
from .text import DEFAULT_TEXT_FRAMES, DEFAULT_TEXT_SIDE

logger = logging.getLogger("ea_data.scoring")

SCORERS = ("motion", "text", "aesthetic")
#: Result key of each scorer.
SCORE_KEYS = {"motion": "motion_score", "text": "text_area", "aesthetic": "aesthetic_score"}
MOTION_BACKENDS = ("opencv", "raft")

ScoreFn = Callable[[np.ndarray], "float | None"]


@dataclass
class Scorers:
    """Built scorers. `fns` maps a scorer name to a function of `(N, H, W, 3)` uint8 frames -> float or
    None; `skipped` maps each requested scorer that was left out to the reason."""

    fns: dict[str, ScoreFn] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def requested(self) -> tuple[str, ...]:
        return tuple(n for n in SCORERS if n in self.fns or n in self.skipped)


def build_scorers(names: Sequence[str] = SCORERS, motion_backend: str = "opencv",
                  raft_weights: str | os.PathLike | None = None, raft_model: str = "small",
                  raft_flow_updates: int = 12,
                  clip_model: str = "ViT-L-14", clip_weights: str | None = None,
                  aesthetic_head: str | os.PathLike | None = None, device: str = "cpu",
                  opencv_flow: str = "dis", motion_work_size: int = DEFAULT_WORK_SIZE,
                  text_frames: int | None = DEFAULT_TEXT_FRAMES,
                  text_limit_side_len: int = DEFAULT_TEXT_SIDE, text_box_thresh: float = 0.5,
                  aesthetic_frames: int | None = 4) -> Scorers:
    """Build the scorers in `names` ("motion", "text", "aesthetic") once, for many clips.

    Args:
        motion_backend: "opencv" (no weights; `opencv_flow` "dis" or "farneback") or "raft" (needs
            `raft_weights`, a local state-dict file for torchvision's `raft_model` "small" or "large";
            `raft_flow_updates` recurrent refinements per pair).
        clip_model, clip_weights: open_clip model name and its weights (local checkpoint path or
            pretrained tag); `aesthetic_head`: path to the improved-aesthetic-predictor head.
        text_frames, aesthetic_frames: frames per clip run through OCR / CLIP (centres of equal parts
            of the sampled frames; None = all). Motion always uses every sampled frame.
        text_limit_side_len: OCR working size (longer side, px; see scoring.text).

    A scorer whose weights are not configured (RAFT without `raft_weights`; aesthetic without both
    `clip_weights` and `aesthetic_head`) or whose optional package is missing is logged once and put
    in `skipped` with the reason; it is never run with random weights. A configured weight file that
    does not exist or does not fit raises an error (a misconfiguration, caught before any work).
    """
    if isinstance(names, str):
        names = (names,)
    unknown = [n for n in names if n not in SCORERS]
    if unknown:
        raise ValueError(f"unknown scorer(s) {unknown}; choose from {SCORERS}")
    if motion_backend not in MOTION_BACKENDS:
        raise ValueError(f"motion_backend must be one of {MOTION_BACKENDS}, got {motion_backend!r}")
    out = Scorers()
    if "motion" in names:
        if motion_backend == "opencv":
            from .motion import opencv_motion_score

            out.fns["motion"] = functools.partial(opencv_motion_score, work_size=motion_work_size,
                                                  method=opencv_flow)
        elif raft_weights is None:
            out.skipped["motion"] = ("motion_backend='raft' needs raft_weights (a local RAFT state-dict file); "
                                     "use motion_backend='opencv' for the weight-free backend")
        else:
            from .motion import RaftMotion

            out.fns["motion"] = RaftMotion(raft_weights, raft_model, device, work_size=motion_work_size,
                                           num_flow_updates=raft_flow_updates)
    if "text" in names:
        try:
            from .text import TextAreaScorer

            out.fns["text"] = TextAreaScorer(max_frames=text_frames, limit_side_len=text_limit_side_len,
                                             box_thresh=text_box_thresh)
        except ImportError as e:
            out.skipped["text"] = f"rapidocr is not installed ({e}); pip install 'ea-data[ocr]'"
    if "aesthetic" in names:
        if clip_weights is None or aesthetic_head is None:
            missing = " and ".join(n for n, v in (("clip_weights", clip_weights), ("aesthetic_head", aesthetic_head))
                                   if v is None)
            out.skipped["aesthetic"] = (f"aesthetic scorer needs {missing} (CLIP weights by path or tag, and "
                                        "the improved-aesthetic-predictor head file)")
        else:
            try:
                from .aesthetic import AestheticScorer

                out.fns["aesthetic"] = AestheticScorer(clip_model, clip_weights, aesthetic_head, device,
                                                       max_frames=aesthetic_frames)
            except ImportError as e:
                out.skipped["aesthetic"] = f"open_clip is not installed ({e}); pip install 'ea-data[aesthetic]'"
    for name, reason in out.skipped.items():
        logger.warning("scorer %r left out of this run: %s", name, reason)
    return out


@functools.lru_cache(maxsize=8)
def _default_scorers(names: tuple[str, ...]) -> Scorers:
    # One build (and one "skipped" report) per process for each set of names given as plain strings.
    return build_scorers(names)


def resolve_scorers(scorers: Scorers | Sequence[str] | str) -> Scorers:
    """A built Scorers as is; scorer names -> the default build of those scorers (cached)."""
    if isinstance(scorers, Scorers):
        return scorers
    if isinstance(scorers, str):
        scorers = (scorers,)
    return _default_scorers(tuple(scorers))


def score_frames(frames: SampledFrames | np.ndarray, scorers: Scorers) -> dict:
    """Run every built scorer on the same `(N, H, W, 3)` uint8 frames; skipped scorers give None."""
    arr = frames.frames if isinstance(frames, SampledFrames) else frames
    out: dict = {}
    for name in scorers.requested:
        fn = scorers.fns.get(name)
        out[SCORE_KEYS[name]] = fn(arr) if fn is not None and len(arr) else None
    out["num_sampled_frames"] = len(arr)
    return out


def score_clip(path: str | os.PathLike, start_time: float, end_time: float,
               scorers: Scorers | Sequence[str] = SCORERS, sample_fps: float = 2.0,
               max_side: int | None = DEFAULT_MAX_SIDE) -> dict:
    """Score the clip `[start_time, end_time)` s of a video from one decode pass at `sample_fps`.

    Returns a dict with "motion_score", "text_area", "aesthetic_score" (None for a requested scorer
    that was skipped, absent if not requested) and "num_sampled_frames".
    Raises VideoReadError (naming the file) for unreadable input.
    """
    built = resolve_scorers(scorers)
    return score_frames(sample_clip_frames(path, start_time, end_time, sample_fps, max_side), built)


@dataclass
class ScoredClip:
    """One kept clip and its scores (see :func:`score_clip` for the keys)."""

    clip: Scene
    scores: dict


@dataclass
class VideoScan:
    """Everything :func:`split_and_score` found in one video."""

    path: str
    scenes: list[Scene]
    clips: list[ScoredClip]
    dropped: list[DroppedScene]
    skipped: dict[str, str]


def split_and_score(path: str | os.PathLike, scorers: Scorers | Sequence[str] = SCORERS,
                    sample_fps: float = 2.0, max_side: int | None = DEFAULT_MAX_SIDE,
                    detector: str = DEFAULT_DETECTOR, threshold: float | None = None, min_scene_len: int = 15,
                    downscale: int | None = None, frame_skip: int = 0, min_seconds: float = 3.0,
                    max_seconds: float = 10.0, split_long: bool = True) -> VideoScan:
    """Detect scenes, split them into clips and score every clip, decoding the video once.

    Arguments are those of :func:`detect_scenes`, :func:`split_scene_clips` and :func:`score_clip`.
    Each clip's scores equal ``score_clip(path, clip.start_time, clip.end_time, ...)``: the same grid
    frames are scored, only taken from the shared decode pass.
    """
    built = resolve_scorers(scorers)
    sampler = GridSampler(sample_fps, max_side)
    clips: list[ScoredClip] = []
    dropped: list[DroppedScene] = []
    def close_scene(scene: Scene) -> None:
        kept, lost = split_scene_clips([scene], min_seconds, max_seconds, split_long, return_dropped=True)
        for c in kept:
            clips.append(ScoredClip(c, score_frames(sampler.between(c.start_time, c.end_time), built)))
        dropped.extend(lost)
        sampler.drop_before(scene.end_time)

    scenes = detect_scenes(path, detector, threshold, min_scene_len, downscale, frame_skip,
                           on_frame=lambda i, t, frame: sampler.offer(t, frame), on_scene=close_scene)
    return VideoScan(os.fspath(path), scenes, clips, dropped, dict(built.skipped))
