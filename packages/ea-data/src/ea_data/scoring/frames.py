"""Frame sampling shared by all scorers: one decode pass, frames on a fixed time grid.

Sampled frames lie on the video's global grid of ticks ``k / sample_fps`` seconds: for each tick the
first decoded frame at or after it is kept (ticks with no frame of their own are skipped, so no frame
is kept twice). Sampling a clip ``[start, end)`` keeps the grid frames inside it, whether the clip is
decoded on its own (:func:`sample_clip_frames`, a seek + one pass) or cut out of a whole-video pass
(:class:`GridSampler`): both give the same frames, so scores do not depend on how the clip was read.

Kept frames are shrunk so their longer side is at most `max_side` pixels (never enlarged); every
scorer works at its own fixed resolution below that, and text area is a fraction of the frame.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import cv2
import numpy as np

from ea_vae.video_io import VideoReadError, iter_frames

#: Tolerance (s) when comparing frame times with ticks and clip bounds, as in ea_vae.video_io.
EPS = 1e-6
DEFAULT_MAX_SIDE = 640


def fit_max_side(frame: np.ndarray, max_side: int | None) -> np.ndarray:
    """Shrink an `(H, W, 3)` frame so max(H, W) <= max_side (area interpolation); never enlarges."""
    if max_side is None:
        return frame
    h, w = frame.shape[:2]
    if max(h, w) <= max_side:
        return frame
    s = max_side / max(h, w)
    return cv2.resize(frame, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)


def grid_start(start_time: float, sample_fps: float) -> float:
    """The first grid tick at or after `start_time`."""
    return math.ceil(start_time * sample_fps - EPS) / sample_fps


@dataclass
class SampledFrames:
    """Frames of one clip: `frames` is `(N, H, W, 3)` uint8 RGB, `times` their timestamps in s."""

    times: list[float]
    frames: np.ndarray

    def __len__(self) -> int:
        return len(self.times)


@dataclass
class GridSampler:
    """Keeps the grid frames of a stream of decoded frames (fed in time order with :meth:`offer`).

    Used inside a whole-video decode pass: the frames of any clip are then :meth:`between` its bounds,
    and :meth:`drop_before` frees frames no clip needs any more.
    """

    sample_fps: float
    max_side: int | None = DEFAULT_MAX_SIDE
    times: list[float] = field(default_factory=list)
    frames: list[np.ndarray] = field(default_factory=list)
    _next_tick: float = 0.0

    def __post_init__(self):
        if not self.sample_fps > 0:
            raise ValueError(f"sample_fps must be > 0, got {self.sample_fps}")

    def offer(self, t: float, frame: np.ndarray) -> bool:
        """Keep `frame` (decoded at `t` s) if it is the first one at or after the next tick."""
        if t + EPS < self._next_tick:
            return False
        step = 1.0 / self.sample_fps
        # Same tick arithmetic as ea_vae.video_io.iter_frames, so both paths pick the same frames.
        self._next_tick += step * max(1, int((t - self._next_tick) / step + 1e-9) + 1)
        self.times.append(t)
        self.frames.append(fit_max_side(frame, self.max_side))
        return True

    def between(self, start_time: float, end_time: float) -> SampledFrames:
        """Kept frames with start_time <= t < end_time (the same frames sample_clip_frames decodes)."""
        idx = [i for i, t in enumerate(self.times) if start_time - EPS <= t < end_time - EPS]
        return _stack([self.times[i] for i in idx], [self.frames[i] for i in idx])

    def drop_before(self, t: float) -> None:
        """Forget frames earlier than `t` s."""
        keep = next((i for i, x in enumerate(self.times) if x >= t - EPS), len(self.times))
        del self.times[:keep], self.frames[:keep]


def _stack(times: list[float], frames: list[np.ndarray]) -> SampledFrames:
    arr = np.stack(frames) if frames else np.zeros((0, 0, 0, 3), np.uint8)
    return SampledFrames(times, arr)


def sample_clip_frames(path: str | os.PathLike, start_time: float, end_time: float, sample_fps: float = 2.0,
                       max_side: int | None = DEFAULT_MAX_SIDE) -> SampledFrames:
    """Decode `[start_time, end_time)` of a video once and keep its grid frames at `sample_fps`.

    Returns SampledFrames with `(N, H, W, 3)` uint8 RGB frames (longer side <= max_side).
    Raises VideoReadError (naming the file) when the file cannot be read or no frame is in range.
    """
    if not sample_fps > 0:
        raise ValueError(f"sample_fps must be > 0, got {sample_fps}")
    if not end_time > start_time:
        raise ValueError(f"clip end_time ({end_time}) must be after start_time ({start_time})")
    first = grid_start(start_time, sample_fps)
    if first >= end_time - EPS:
        raise ValueError(f"clip [{start_time:.3f}, {end_time:.3f}) s holds no sampling tick at {sample_fps} fps; "
                         "raise sample_fps or score longer clips")
    times, frames = [], []
    for t, frame in iter_frames(path, first, end_time, fps=sample_fps):
        times.append(t)
        frames.append(fit_max_side(frame, max_side))
    if not frames:
        raise VideoReadError(f"{os.fspath(path)}: no frames decoded in [{start_time:.3f}, {end_time:.3f}) s "
                             f"at {sample_fps} fps (clip outside the video or too short)")
    return _stack(times, frames)
