"""Clip scores for curation: motion (optical flow), text area (OCR) and aesthetics (CLIP + MLP head).

All scorers read the same frames, sampled at a fixed rate in one decode pass (see `frames`).
"""

from .frames import GridSampler, SampledFrames, sample_clip_frames
from .score import (
    SCORE_KEYS,
    SCORERS,
    ScoredClip,
    Scorers,
    VideoScan,
    build_scorers,
    score_clip,
    score_frames,
    split_and_score,
)

__all__ = [
    "SCORERS", "SCORE_KEYS", "GridSampler", "SampledFrames", "ScoredClip", "Scorers", "VideoScan",
    "build_scorers", "sample_clip_frames", "score_clip", "score_frames", "split_and_score",
]
