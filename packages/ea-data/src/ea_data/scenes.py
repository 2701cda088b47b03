"""Scene splitting: find hard cuts with PySceneDetect and turn scenes into clips of bounded length.

Frames are decoded once with :func:`ea_vae.video_io.iter_frames` (PyAV); each frame is downscaled and
handed to PySceneDetect detectors. The default, "adaptive+histogram", runs two of them side by side
and cuts where either finds a cut:

- ``AdaptiveDetector`` (HSV content change over the rolling average of its neighbours) with
  ``min_content_val`` lowered from 15 to 8, so a cut between two similar-coloured scenes of little
  motion (content change ~9) is not vetoed;
- ``HistogramDetector`` (luma-histogram correlation between consecutive frames, cut when it drops
  below 1 - 0.03): a pan keeps the histogram, a cut changes it. It finds the cuts into or out of a
  fast, highly textured scene, whose every frame changes as much as a cut does, so the adaptive
  ratio stays low (scenedetect's default 0.05 misses some of them).

On 43 synthetic videos (make_dataset seeds 0-7 at 128x96 / 8 fps, and 7 videos at 160x120 / 10 fps)
AdaptiveDetector's defaults missed 14 of 110 cuts; the pair finds all of them within one frame with no
false cut (histogram thresholds 0.02 and 0.03 both do; 0.05 misses one). HistogramDetector uses 64 bins (PySceneDetect: 256): on 80x60 frames 256 bins gave a
false cut inside a fast pan. Cuts reported by both
detectors at neighbouring frames count once; no two cuts are closer than `min_scene_len`.

An optional ``on_frame`` callback sees every decoded full-size frame, so a caller can keep the frames
it needs for scoring from the same decode pass (see :func:`ea_data.scoring.split_and_score`).

    scenes = detect_scenes("video.mp4")                       # list[Scene]
    clips = split_scene_clips(scenes, min_seconds=3.0, max_seconds=10.0)
    clips, dropped = split_scene_clips(scenes, return_dropped=True)   # dropped: list[DroppedScene]

Frame numbers count decoded frames from 0; times are ``frame / fps`` in seconds.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, replace

import cv2
import numpy as np

from ea_vae.video_io import VideoReadError, iter_frames, video_info

from .blockmatch import BlockMatchConfig, BlockMatchDetector

DETECTORS = ("blockmatch", "adaptive+histogram", "adaptive", "content", "histogram", "blockmatch+histogram")
DEFAULT_DETECTOR = "blockmatch"
#: Default thresholds: AdaptiveDetector's score ratio, ContentDetector's HSV content change,
#: HistogramDetector's maximum luma-histogram change (1 - correlation).
DEFAULT_THRESHOLDS = {"blockmatch": 0.4, "adaptive": 3.0, "content": 27.0, "histogram": 0.03}
#: AdaptiveDetector's minimum content change for a cut (PySceneDetect's default is 15).
ADAPTIVE_MIN_CONTENT_VAL = 8.0
#: Luma-histogram bins of HistogramDetector (PySceneDetect: 256); 64 is steadier on small frames.
HISTOGRAM_BINS = 64
#: Frames are downscaled so their width is at least this many pixels (PySceneDetect's default).
DETECT_MIN_WIDTH = 256

#: Reasons a scene is not turned into a clip.
TOO_SHORT = "too_short"
TOO_LONG = "too_long"
TRANSITION = "transition"

#: Kinds of scene records: a shot, or the frames of a gradual transition between two shots.
SHOT, FADE, DISSOLVE = "shot", "fade", "dissolve"


@dataclass(frozen=True)
class Scene:
    """A span of one video: frames ``[start_frame, end_frame)``, times ``[start_time, end_time)`` in s.

    ``scene_index`` is the index of the detected scene the span belongs to (a piece of a long scene
    keeps its scene's index), so every clip can be traced to one detected scene.

    `kind` is "shot" for a shot, or "fade" (through black) / "dissolve" (any other gradual
    transition: dissolves, wipes) for the mixed frames of a gradual transition between two shots;
    those are never turned into clips.
    """

    start_frame: int
    end_frame: int
    start_time: float
    end_time: float
    fps: float
    scene_index: int = 0
    kind: str = SHOT

    @property
    def num_frames(self) -> int:
        return self.end_frame - self.start_frame

    @property
    def duration(self) -> float:
        return self.num_frames / self.fps

    @property
    def is_transition(self) -> bool:
        return self.kind != SHOT

    @classmethod
    def from_frames(cls, start_frame: int, end_frame: int, fps: float, scene_index: int = 0,
                    kind: str = SHOT) -> Scene:
        return cls(start_frame, end_frame, start_frame / fps, end_frame / fps, fps, scene_index, kind)


@dataclass(frozen=True)
class DroppedScene:
    """A scene (or the leftover piece of a split scene) that was not kept, with why."""

    scene: Scene
    reason: str  # TOO_SHORT, TOO_LONG or TRANSITION
    detail: str


def make_detectors(detector: str = "adaptive+histogram", threshold: float | None = None, min_scene_len: int = 15,
                   hist_threshold: float | None = None) -> list:
    """Fresh PySceneDetect detectors for `detector` (one, or two for "adaptive+histogram").

    `threshold` is the adaptive / content / histogram threshold (None = DEFAULT_THRESHOLDS); for
    "adaptive+histogram" it is the adaptive one and `hist_threshold` the histogram one.
    """
    from scenedetect.detectors import AdaptiveDetector, ContentDetector, HistogramDetector

    if detector not in DETECTORS:
        raise ValueError(f"detector must be one of {DETECTORS}, got {detector!r}")
    if "blockmatch" in detector:
        raise ValueError("blockmatch is not a PySceneDetect detector (see ea_data.blockmatch)")
    if min_scene_len < 1:
        raise ValueError(f"min_scene_len must be >= 1 frame, got {min_scene_len}")
    out = []
    for name in detector.split("+"):
        given = hist_threshold if (name == "histogram" and "+" in detector) else threshold
        thr = DEFAULT_THRESHOLDS[name] if given is None else float(given)
        if name == "adaptive":
            out.append(AdaptiveDetector(adaptive_threshold=thr, min_content_val=ADAPTIVE_MIN_CONTENT_VAL,
                                        min_scene_len=min_scene_len))
        elif name == "content":
            out.append(ContentDetector(threshold=thr, min_scene_len=min_scene_len))
        else:
            if not 0 < thr < 1:
                raise ValueError(f"histogram threshold must be in (0, 1), got {thr}")
            out.append(HistogramDetector(threshold=thr, bins=HISTOGRAM_BINS, min_scene_len=min_scene_len))
    return out


def _detect_size(width: int, height: int, downscale: int | None) -> tuple[int, int]:
    """Working (width, height) for detection; `downscale` None picks a factor keeping width >= 256."""
    if downscale is None:
        downscale = max(1, width // DETECT_MIN_WIDTH)
    if downscale < 1:
        raise ValueError(f"downscale must be >= 1, got {downscale}")
    return max(1, round(width / downscale)), max(1, round(height / downscale))


def detect_scenes(path: str | os.PathLike, detector: str = DEFAULT_DETECTOR, threshold: float | None = None,
                  min_scene_len: int = 15, downscale: int | None = None, frame_skip: int = 0,
                  on_frame: Callable[[int, float, np.ndarray], None] | None = None,
                  on_cut: Callable[[int], None] | None = None,
                  hist_threshold: float | None = None,
                  on_scene: Callable[[Scene], None] | None = None,
                  blockmatch: BlockMatchConfig | None = None) -> list[Scene]:
    """Split a video into scenes at the cuts and gradual transitions found, covering every decoded frame.

    Args:
        path: video file.
        detector: "blockmatch" (default; motion- and light-compensated block matching, see
            ea_data.blockmatch: hard cuts, fades and dissolves), "adaptive+histogram" (the previous
            default, both PySceneDetect detectors below), "adaptive" (AdaptiveDetector: cut when a
            frame's change is `threshold` times the rolling average of its neighbours), "content"
            (ContentDetector: cut when the HSV change exceeds `threshold`), "histogram"
            (HistogramDetector: cut when the luma histogram changes by > `threshold`), or
            "blockmatch+histogram". Only "blockmatch" reports gradual transitions.
        threshold: detector threshold; None uses the default (0.4 blockmatch cut mismatch, 3.0
            adaptive, 27.0 content, 0.03 histogram). For a pair it is the first one's.
        hist_threshold: the histogram threshold of a pair (None = 0.03).
        min_scene_len: minimum scene length in frames between two cuts.
        downscale: integer factor frames are shrunk by before PySceneDetect's detectors; None keeps the
            width >= 256 px. (blockmatch works on its own fixed 96-px-wide frames.)
        frame_skip: analyse only every (frame_skip + 1)-th frame (faster; cuts are then found within
            frame_skip frames). Every frame is still decoded and passed to `on_frame`.
        on_frame: called as ``on_frame(frame_index, time_s, rgb)`` with every decoded `(H, W, 3)` uint8
            frame, in order (lets a caller reuse this decode pass).
        on_cut: called with the first frame of every scene record after the first (a cut; a gradual
            transition's first frame and the first frame after it) as soon as it is certain, in
            increasing order.
        on_scene: called with every finished Scene record (shots and transitions), in order.
        blockmatch: settings of the blockmatch detector (None = BlockMatchConfig()).

    Returns:
        Scene records in order, tiling the video: the first starts at frame 0, the last ends at the
        number of decoded frames. Shots have ``kind == "shot"``; the frames of a gradual transition
        are one record of kind "fade" or "dissolve" (never a clip, see split_scene_clips).

    Raises:
        VideoReadError: the file is missing, empty, not a video, or decoding fails (message names it).
    """
    if frame_skip < 0:
        raise ValueError(f"frame_skip must be >= 0, got {frame_skip}")
    if detector not in DETECTORS:
        raise ValueError(f"detector must be one of {DETECTORS}, got {detector!r}")
    if min_scene_len < 1:
        raise ValueError(f"min_scene_len must be >= 1 frame, got {min_scene_len}")
    info = video_info(path)  # raises VideoReadError naming the file
    names = detector.split("+")
    bm = None
    if "blockmatch" in names:
        cfg = blockmatch or BlockMatchConfig()
        if threshold is not None:
            cfg = replace(cfg, cut_threshold=float(threshold))
        bm = BlockMatchDetector(cfg)
        rest = [n for n in names if n != "blockmatch"]
        dets = make_detectors(rest[0], hist_threshold, min_scene_len) if rest else []
    else:
        dets = make_detectors(detector, threshold, min_scene_len, hist_threshold)
    size = _detect_size(info.width, info.height, downscale)
    step = frame_skip + 1
    # Boundaries: (start, end, kind): a cut is (c, c, "cut"); a transition covers [start, end).
    bounds: list[tuple[int, int, str]] = []
    pending: list[tuple[int, int, str]] = []
    records: list[Scene] = []
    n = 0  # frames decoded so far

    def emit(start: int, end: int, kind: str) -> None:
        if end <= start:
            return
        sc = Scene.from_frames(start, end, info.fps, len(records), kind)
        records.append(sc)
        if on_scene is not None:
            on_scene(sc)

    def commit(upto: int) -> None:
        # Events become certain `delay` frames after they happen; commit them in order. A cut within
        # min_scene_len of the last boundary is the same cut (or too close to make a scene), and so is
        # one touching a transition already committed.
        pending.sort()
        while pending and pending[0][0] <= upto:
            s, e, kind = pending.pop(0)
            last = bounds[-1][1] if bounds else 0
            if kind == "cut":
                if not (0 < s < n) or (bounds and (s - last < min_scene_len or s <= bounds[-1][1] + 2)):
                    continue
                emit(last, s, SHOT)
                bounds.append((s, s, kind))
            else:
                s, e = max(s, last, 1), min(e, n)
                if e - s < 2:
                    continue
                emit(last, s, SHOT)
                emit(s, e, kind)
                bounds.append((s, e, kind))
            if on_cut is not None:
                for f in sorted({s, e}):
                    if 0 < f < n:
                        on_cut(f)

    delay = 2 * bm.cfg.lag + 2 if bm is not None else 0
    k = 0  # index of the analysed frame (blockmatch counts analysed frames)
    for i, (t, rgb) in enumerate(iter_frames(path)):
        n = i + 1
        if on_frame is not None:
            on_frame(i, t, rgb)
        if frame_skip and i % step:
            continue
        small = cv2.resize(rgb, size, interpolation=cv2.INTER_LINEAR) if size != rgb.shape[1::-1] else rgb
        if bm is not None:
            pending.extend((s * step, e * step, kind) for kind, s, e in bm.push(k, small))
            k += 1
        if dets:
            bgr = cv2.cvtColor(small, cv2.COLOR_RGB2BGR)  # PySceneDetect works on BGR frames (as OpenCV decodes)
            for det in dets:
                pending.extend((int(c), int(c), "cut") for c in det.process_frame(i, bgr))
        commit(i - delay)
    if n == 0:
        raise VideoReadError(f"{os.fspath(path)}: no frames could be decoded")
    if bm is not None:
        pending.extend((s * step, e * step, kind) for kind, s, e in bm.finish())
    for det in dets:
        pending.extend((int(c), int(c), "cut") for c in det.post_process(n - 1))
    commit(n)
    emit(bounds[-1][1] if bounds else 0, n, SHOT)
    return records


def split_scene_clips(scenes: list[Scene], min_seconds: float = 3.0, max_seconds: float = 10.0,
                      split_long: bool = True, return_dropped: bool = False):
    """Turn scenes into clips lasting between `min_seconds` and `max_seconds` (inclusive).

    Gradual-transition records (`kind` "fade" / "dissolve") are never clips: they are dropped
    (TRANSITION), so no clip starts or ends half-faded. Shots shorter than `min_seconds` are dropped (TOO_SHORT). Longer than `max_seconds`: with
    `split_long`, cut into the fewest equal pieces that fit (pieces differ by at most one frame); if
    equal pieces would be shorter than `min_seconds`, cut pieces of `max_seconds` and drop a leftover
    shorter than `min_seconds`. Without `split_long` they are dropped (TOO_LONG).

    Returns:
        The clips (list[Scene], in order, each with its scene's `scene_index`), or with
        `return_dropped` a tuple `(clips, dropped)` where `dropped` lists a DroppedScene for every
        scene or leftover piece not kept, so each frame of each scene is accounted for.
    """
    if min_seconds < 0 or max_seconds <= 0 or max_seconds < min_seconds:
        raise ValueError(f"need 0 <= min_seconds <= max_seconds and max_seconds > 0, "
                         f"got min_seconds={min_seconds}, max_seconds={max_seconds}")
    clips: list[Scene] = []
    dropped: list[DroppedScene] = []
    for s in scenes:
        fps = s.fps
        min_f = math.ceil(min_seconds * fps - 1e-6)
        max_f = math.floor(max_seconds * fps + 1e-6)
        if max_f < 1:
            raise ValueError(f"max_seconds={max_seconds} is shorter than one frame at {fps} fps")
        n = s.num_frames

        def piece(a, b, s=s):
            return Scene.from_frames(a, b, s.fps, s.scene_index)

        if s.is_transition:
            dropped.append(DroppedScene(s, TRANSITION, f"{s.kind} transition ({s.duration:.2f} s)"))
        elif n < min_f:
            dropped.append(DroppedScene(s, TOO_SHORT, f"{s.duration:.2f} s < {min_seconds} s"))
        elif n <= max_f:
            clips.append(s)
        elif not split_long:
            dropped.append(DroppedScene(s, TOO_LONG, f"{s.duration:.2f} s > {max_seconds} s"))
        else:
            k = math.ceil(n / max_f)
            if n // k >= min_f:
                edges = [s.start_frame + (n * j) // k for j in range(k + 1)]
                clips.extend(piece(a, b) for a, b in zip(edges[:-1], edges[1:]))
            else:
                start = s.start_frame
                while s.end_frame - start >= max_f:
                    clips.append(piece(start, start + max_f))
                    start += max_f
                rest = s.end_frame - start
                if rest >= min_f and rest > 0:
                    clips.append(piece(start, s.end_frame))
                elif rest > 0:
                    left = piece(start, s.end_frame)
                    dropped.append(DroppedScene(left, TOO_SHORT, f"leftover of a split scene: "
                                                f"{left.duration:.2f} s < {min_seconds} s"))
    return (clips, dropped) if return_dropped else clips
