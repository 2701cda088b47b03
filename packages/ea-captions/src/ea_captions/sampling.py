"""Frame sampling and clip loading: which frames of a clip the captioning model sees.

Two policies (:class:`FrameSampling`): `num_frames` uniformly spaced frames (the middle of `N` equal
segments of the clip, so both ends are covered evenly), or a fixed rate `fps` (one frame every
`1/fps` seconds, at most `max_frames`). :func:`load_clip` decodes a time range of a video with
``ea_vae.video_io`` or reads an image (``ea_vae.media``), and returns a :class:`~ea_captions.captioner.Clip`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from ea_captions.captioner import Clip
from ea_core.files import POSITIVE, check_fields
from ea_vae.media import media_kind, read_image
from ea_vae.video_io import VideoReadError, iter_frames, video_info


@dataclass
class FrameSampling:
    """Sample `num_frames` uniformly, or (when `fps` is set) one frame per `1/fps` seconds.

    With `fps`, at least `min_frames` and at most `max_frames` frames are taken.
    """

    num_frames: int | None = 8
    fps: float | None = None
    min_frames: int = 2
    max_frames: int = 64

    def __post_init__(self):
        check_fields(self, dict.fromkeys(("num_frames", "fps", "min_frames", "max_frames"), POSITIVE))
        if self.fps is not None:
            if self.fps <= 0:
                raise ValueError(f"sampling fps must be > 0, got {self.fps}")
            self.num_frames = None
        elif self.num_frames is None or self.num_frames < 1:
            raise ValueError(f"num_frames must be >= 1 (or set fps), got {self.num_frames}")
        if not 1 <= self.min_frames <= self.max_frames:
            raise ValueError(f"need 1 <= min_frames <= max_frames, got {self.min_frames}, {self.max_frames}")


def sample_frame_indices(total: int, source_fps: float, sampling: FrameSampling) -> np.ndarray:
    """Indices (sorted, in `[0, total)`) of the frames to keep from a clip of `total` frames.

    A clip shorter than the requested count gives each of its frames once (no duplicates).
    """
    if total < 1:
        raise ValueError(f"cannot sample frames from a clip with {total} frames")
    if sampling.fps is not None:
        if source_fps <= 0:
            raise ValueError(f"fixed-rate sampling needs the source frame rate, got fps={source_fps}")
        n = math.floor(total / source_fps * sampling.fps + 1e-6)
        n = min(max(n, sampling.min_frames), sampling.max_frames)
    else:
        n = sampling.num_frames
    n = min(n, total)
    # Midpoints of n equal segments: symmetric, and exact every k-th frame when total = k * n.
    return np.floor((np.arange(n) + 0.5) * total / n).astype(np.int64)


def load_clip(clip_id: str, path: str | os.PathLike, start_time: float = 0.0, end_time: float | None = None,
              sampling: FrameSampling | None = None, is_image: bool | None = None) -> Clip:
    """Decode the frames of `path` in `[start_time, end_time)` seconds and sample them.

    Images (by extension, or `is_image=True`) give a one-frame clip. Raises
    ``ea_vae.video_io.VideoReadError`` / ``ea_vae.media.ImageReadError`` (an ``OSError``) naming the
    file when it cannot be read.
    """
    sampling = sampling or FrameSampling()
    if is_image if is_image is not None else media_kind(path) == "image":
        frame = read_image(path)
        return Clip(clip_id, frame[None], fps=1.0, is_image=True, source=str(path))
    info = video_info(path)
    stop = info.duration if end_time is None else min(end_time, max(info.duration, start_time))
    expected = max(1, round((stop - start_time) * info.fps))
    # Keep only the sampled frames while decoding (a 10 s 1080p clip is ~2 GB of frames); if the
    # container's frame count was off, decode again with the true count.
    for _ in range(2):
        wanted = set(sample_frame_indices(expected, info.fps, sampling).tolist())
        kept, count = [], 0
        for _, frame in iter_frames(path, start_time, end_time):
            if count in wanted:
                kept.append(frame)
            count += 1
        if count == 0:
            raise VideoReadError(f"{path}: no frames decoded in [{start_time}, {end_time})")
        if count == expected:
            break
        expected = count
    duration = count / info.fps
    # The model sees len(kept) frames spread over the clip: their average rate is what it should assume.
    rate = len(kept) / duration
    end = end_time if end_time is not None else start_time + duration
    return Clip(clip_id, np.stack(kept), fps=rate, source=str(path), start_time=start_time, end_time=end)
