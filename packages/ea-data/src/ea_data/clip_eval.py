"""Measure a (generated) demo-world clip against the attributes its prompt asked for.

    from ea_data.clip_eval import evaluate_clip, match_rates
    m = evaluate_clip(video, "red", "left")    # video (3, F, H, W) in [-1, 1], torch or numpy
    m["color_match"], m["direction"], m["direction_match"], m["speed"]
    match_rates([m1, m2, ...])                 # {"color": 0.95, "direction": 0.8, "both": 0.78, "n": 32}

How it measures (no model involved, so it can judge any generator):
  * colour: a pixel belongs to the object when its nearest colour among `COLOR_NAMES` is the asked one
    and it lies within `color_tolerance` RGB units of it (the demo world's backgrounds are dark greys far
    from every object colour). The object is the largest 8-connected blob of such pixels: a frame shows
    it when the blob covers at least `min_fraction` of the frame (scattered pixels of the colour, as in
    noise, do not count); the colour is present when at least half of the frames show it.
  * direction: the centroid of the blob is tracked over the frames that show it; a
    least-squares line through the centroids gives the velocity (vx, vy) in frame sides per frame. The
    direction is the dominant axis with its sign ("left", "right", "up", "down"), or None when the
    object travels less than `min_travel` of the frame over the clip, or is seen in fewer than 2 frames.
  * speed: |(vx, vy)|, frame sides per frame.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import cv2
import numpy as np

from .synthetic import COLOR_NAMES, DIRECTIONS

#: RGB distance (0..255 units) within which a pixel is the colour it is nearest to among COLOR_NAMES.
COLOR_TOLERANCE = 60.0
_PALETTE = np.array(list(COLOR_NAMES.values()), np.float32)  # (K, 3)
_NAMES = list(COLOR_NAMES)


def _to_frames(video) -> np.ndarray:
    """`(3, F, H, W)` in [-1, 1] (torch or numpy) -> `(F, H, W, 3)` float32 RGB in 0..255."""
    if hasattr(video, "detach"):
        video = video.detach().float().cpu().numpy()
    v = np.asarray(video, dtype=np.float32)
    if v.ndim != 4 or v.shape[0] != 3:
        raise ValueError(f"video must be (3, F, H, W) in [-1, 1], got shape {tuple(v.shape)}")
    return np.clip((v.transpose(1, 2, 3, 0) + 1) * 127.5, 0, 255)


def color_masks(video, color: str, color_tolerance: float = COLOR_TOLERANCE) -> np.ndarray:
    """Boolean `(F, H, W)`: the pixels of `video` (3, F, H, W) in [-1, 1] that are the named `color`."""
    if color not in COLOR_NAMES:
        raise ValueError(f"unknown colour {color!r}; choose one of {_NAMES}")
    frames = _to_frames(video)
    d = np.linalg.norm(frames[..., None, :] - _PALETTE, axis=-1)  # (F, H, W, K)
    k = _NAMES.index(color)
    return (d.argmin(-1) == k) & (d[..., k] <= color_tolerance)


def _largest_blob(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a boolean (H, W) mask (all False when empty)."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n <= 1:
        return np.zeros_like(mask)
    return labels == 1 + int(stats[1:, cv2.CC_STAT_AREA].argmax())


def evaluate_clip(video, color: str, direction: str | None = None, *, color_tolerance: float = COLOR_TOLERANCE,
                  min_fraction: float = 0.008, min_travel: float = 0.05) -> dict:
    """Measure one clip. `video`: (3, F, H, W) in [-1, 1]; `color` a COLOR_NAMES key; `direction` the asked
    direction (one of DIRECTIONS) or None (then `direction_match` is None).

    Returns `{"color_present", "color_fraction", "frames_with_color", "direction", "velocity",
    "speed", "travel", "color_match", "direction_match"}`: `color_fraction` is the mean fraction of pixels
    of the colour per frame, `velocity` (vx, vy) and `speed` in frame sides per frame (x right, y down),
    `travel` the distance covered over the clip in frame sides; `color_match` is `color_present`.
    `color_fraction` counts the object's blob only.
    """
    if direction is not None and direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r}; choose one of {list(DIRECTIONS)}")
    masks = [_largest_blob(m) for m in color_masks(video, color, color_tolerance)]
    masks = np.stack(masks)
    num_frames, height, width = masks.shape
    fractions = masks.mean(axis=(1, 2))
    seen = fractions >= min_fraction
    present = bool(seen.sum() * 2 >= num_frames)
    measured, velocity, speed, travel = None, (0.0, 0.0), 0.0, 0.0
    idx = np.flatnonzero(seen)
    if len(idx) >= 2:
        ys, xs = [], []
        for i in idx:
            yy, xx = np.nonzero(masks[i])
            ys.append(yy.mean() / height)
            xs.append(xx.mean() / width)
        t = idx.astype(np.float64)
        vx = float(np.polyfit(t, xs, 1)[0])
        vy = float(np.polyfit(t, ys, 1)[0])
        velocity, speed = (vx, vy), float(np.hypot(vx, vy))
        travel = speed * float(idx[-1] - idx[0])
        if travel >= min_travel:
            measured = ("right" if vx > 0 else "left") if abs(vx) >= abs(vy) else ("down" if vy > 0 else "up")
    return {"color_present": present, "color_fraction": float(fractions.mean()),
            "frames_with_color": int(seen.sum()), "direction": measured, "velocity": velocity,
            "speed": speed, "travel": travel, "color_match": present,
            "direction_match": None if direction is None else measured == direction}


def evaluate_clips(videos: Iterable, attributes: Sequence[tuple[str, str]], **kwargs) -> list[dict]:
    """`evaluate_clip` over videos and their asked `(color, direction)` pairs (e.g. a (B, 3, F, H, W) batch)."""
    return [evaluate_clip(v, c, d, **kwargs) for v, (c, d) in zip(videos, attributes, strict=True)]


def match_rates(results: Sequence[dict]) -> dict:
    """Fractions of clips whose colour / direction / both match: `{"color", "direction", "both", "n"}`.

    The direction rate counts clips whose measured direction equals the asked one (a clip whose colour is
    missing has no measured direction, so it counts as a miss).
    """
    n = len(results)
    if n == 0:
        raise ValueError("match_rates needs at least one result")
    color = sum(bool(r["color_match"]) for r in results) / n
    direction = sum(bool(r["direction_match"]) for r in results) / n
    both = sum(bool(r["color_match"]) and bool(r["direction_match"]) for r in results) / n
    return {"color": color, "direction": direction, "both": both, "n": n}
