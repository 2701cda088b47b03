"""Reading and writing video files with PyAV (the `video` extra: `pip install ea-vae[video]`).

This is the project's single home for video file I/O: `ea_data` and `ea_captions` import it; media
formats (extensions, WebDataset sample names) and decoding from bytes are in :mod:`ea_vae.media`.
Frames are numpy arrays `(F, H, W, 3)` uint8 RGB; model tensors are `(3, F, H, W)` float in [-1, 1].
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch

from ea_core.atomic import atomic_write


class VideoReadError(RuntimeError):
    """A video could not be opened or decoded; the message names the file and the problem."""


def _av():
    try:
        import av
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError("video file I/O needs PyAV: pip install 'ea-vae[video]'") from e
    return av


@dataclass(frozen=True)
class VideoInfo:
    """Stream properties of a video file. `duration` is in seconds."""

    path: str
    fps: float
    num_frames: int
    width: int
    height: int
    duration: float


def _open(path: str | os.PathLike):
    av = _av()
    path = str(path)
    if not os.path.exists(path):
        raise VideoReadError(f"{path}: file does not exist")
    if os.path.getsize(path) == 0:
        raise VideoReadError(f"{path}: file is empty (0 bytes)")
    try:
        container = av.open(path)
    except Exception as e:  # PyAV raises many error types (InvalidDataError, OSError...)
        raise VideoReadError(f"{path}: not a readable video ({type(e).__name__}: {e})") from e
    if not container.streams.video:
        container.close()
        raise VideoReadError(f"{path}: contains no video stream")
    return container


def video_info(path: str | os.PathLike) -> VideoInfo:
    """Read fps, frame count, size and duration from the container without decoding."""
    container = _open(path)
    try:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 0) or 0.0
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000
        else:
            duration = 0.0
        frames = stream.frames or (round(duration * fps) if fps else 0)
        if fps <= 0:
            raise VideoReadError(f"{path}: video stream has no frame rate")
        return VideoInfo(str(path), fps, int(frames), stream.codec_context.width,
                         stream.codec_context.height, duration)
    finally:
        container.close()


def iter_frames(path: str | os.PathLike, start_time: float = 0.0, end_time: float | None = None,
                fps: float | None = None, size: tuple[int, int] | None = None,
                keep: Callable[[int, float], bool] | None = None) -> Iterator[tuple[float, Any]]:
    """Decode frames in `[start_time, end_time)` one at a time, yielding `(time_s, (H, W, 3) uint8)`.

    With `fps` set, frames are subsampled to about that rate (nearest decoded frame to each tick).
    `size=(width, height)` scales frames in the same step as the YUV -> RGB conversion (much cheaper
    than converting at full size and resizing after). `keep(index, time)` (index counts frames from
    `start_time`) can skip frames before any conversion; skipped frames are still decoded.
    Decoding starts at the keyframe before `start_time` (a seek), so clips of long videos are cheap.
    Raises :class:`VideoReadError` naming the file when it cannot be opened or decoded.
    """
    container = _open(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if start_time > 0:
            container.seek(int(start_time / stream.time_base), stream=stream, backward=True)
        next_tick = start_time
        step = 1.0 / fps if fps else 0.0
        index = -1
        convert = {"format": "rgb24"} if size is None else {"format": "rgb24", "width": int(size[0]),
                                                             "height": int(size[1])}
        try:
            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                t = float(frame.pts * stream.time_base)
                if t < start_time - 1e-6:
                    continue
                if end_time is not None and t >= end_time - 1e-6:
                    break
                if fps and t + 1e-6 < next_tick:
                    continue
                if fps:
                    next_tick += step * max(1, int((t - next_tick) / step + 1e-9) + 1)
                index += 1
                if keep is not None and not keep(index, t):
                    continue
                yield t, frame.to_ndarray(**convert)
        except _av().error.FFmpegError as e:
            raise VideoReadError(f"{path}: decoding failed ({type(e).__name__}: {e})") from e
    finally:
        container.close()


def read_video(path: str | os.PathLike, start_time: float = 0.0, end_time: float | None = None,
               fps: float | None = None, max_frames: int | None = None, size: tuple[int, int] | None = None):
    """Decode a video (or a time range of it) into `(F, H, W, 3)` uint8 RGB frames.

    `size=(width, height)` scales while converting. Returns `(frames, fps)` where fps is the rate of
    the returned frames.
    """
    import numpy as np

    frames = []
    for _, frame in iter_frames(path, start_time, end_time, fps, size):
        frames.append(frame)
        if max_frames is not None and len(frames) >= max_frames:
            break
    if not frames:
        raise VideoReadError(f"{path}: no frames decoded in [{start_time}, {end_time})")
    rate = fps if fps else video_info(path).fps
    return np.stack(frames), rate


def write_video(path: str | os.PathLike, frames, fps: float, crf: int = 18) -> Path:
    """Write `(F, H, W, 3)` uint8 RGB frames atomically (temp file + rename).

    A `.gif` path writes an animated GIF (for quick looks in a browser or notebook); any other suffix an
    H.264 stream (mp4), whose width and height must be even (yuv420p). `crf` trades size for quality.
    """
    import numpy as np

    av = _av()
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"write_video expects (F, H, W, 3) uint8 frames, got {frames.shape} {frames.dtype}")
    f, h, w, _ = frames.shape
    gif = str(path).lower().endswith(".gif")
    if (h % 2 or w % 2) and not gif:
        raise ValueError(f"write_video needs even width and height for yuv420p, got {w}x{h}")
    rate = Fraction(fps).limit_denominator(1001)
    return atomic_write(path, lambda tmp: _encode(av, tmp, frames, rate, gif, crf))


def _encode(av, tmp: Path, frames, rate: Fraction, gif: bool, crf: int) -> None:
    """Encode `(F, H, W, 3)` uint8 frames into the container at `tmp` (format from its suffix)."""
    _, h, w, _ = frames.shape
    with av.open(str(tmp), mode="w") as container:
        if gif:
            stream = container.add_stream("gif", rate=rate)
            stream.width, stream.height, stream.pix_fmt = w, h, "rgb8"
        else:
            stream = container.add_stream("libx264", rate=rate)
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            stream.options = {"crf": str(crf), "preset": "medium"}
        for frame in frames:
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            # Convert here rather than inside the encoder: byte-identical files for identical frames.
            vf = vf if gif else vf.reformat(format="yuv420p")
            for packet in stream.encode(vf):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def frames_to_tensor(frames) -> torch.Tensor:
    """`(F, H, W, 3)` uint8 -> `(3, F, H, W)` float32 in [-1, 1]."""
    t = torch.as_tensor(frames)
    if t.ndim != 4 or t.shape[-1] != 3:
        raise ValueError(f"expected (F, H, W, 3) frames, got shape {tuple(t.shape)}")
    return t.permute(3, 0, 1, 2).float().div(127.5).sub(1.0)


def tensor_to_frames(video: torch.Tensor):
    """`(3, F, H, W)` float in [-1, 1] -> `(F, H, W, 3)` uint8 numpy."""
    if video.ndim != 4 or video.shape[0] != 3:
        raise ValueError(f"expected a (3, F, H, W) video tensor, got shape {tuple(video.shape)}")
    x = ((video.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(1, 2, 3, 0).cpu().numpy()


def save_videos(videos: torch.Tensor, names, folder: str | os.PathLike, fps: float,
                gif: bool = True) -> list[Path]:
    """Write each `(3, F, H, W)` video of `videos` (B, 3, F, H, W) in [-1, 1] to `folder` as
    `NN-<name>.mp4` (and `.gif` beside it when `gif`), the name made file-safe (a prompt works);
    returns the mp4 paths. Every file is written atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (video, name) in enumerate(zip(videos, names, strict=True)):
        stem = f"{i:02d}-" + (re.sub(r"[^a-zA-Z0-9]+", "_", str(name)).strip("_")[:48] or "video")
        frames = tensor_to_frames(video)
        paths.append(write_video(folder / f"{stem}.mp4", frames, fps))
        if gif:
            write_video(folder / f"{stem}.gif", frames, fps)
    return paths
