"""Realistic evaluation videos made offline from real photographs, with known ground truth.

Synthetic videos (ea_data.synthetic) have no fast real motion, no lighting change and no compression
artifacts, so a scene detector tuned on them can still cut real footage mid-shot. These videos are made
of real photographs that ship inside scikit-image (`skimage.data`: astronaut, coffee, chelsea, rocket,
motorcycle, camera, coins, brick, grass, gravel, ...; no download) and carry what real footage has:

- camera motion: pans, zooms, hand-held shake (a sum of 2-7 Hz tremors), motion blur (the camera path
  averaged over the shutter time);
- lighting: a flash, an auto-exposure ramp, a light/shade passage (tree shadows cast on the scene
  pass through the frame with a fast pan and fall on the subject, and the auto-exposure chases the
  mean brightness, as when the camera follows riders under trees);
- a moving subject (a soft-edged cut-out of another photograph) and sensor noise;
- low-bitrate H.264 with long or short keyframe intervals (`scenecut=0`, so keyframes sit on a fixed
  grid): at a keyframe the encoder re-codes the whole frame, and the decoded frame difference jumps
  although nothing in the scene changes. The jump is measured on the decoded file and stored in the
  truth (`keyframe_jump`);
- transitions with known ground truth: hard cuts, fades through black, dissolves and wipes;
- text: burned-in subtitles (white, dark outline, no plate) and signs in the scene (dark text on a
  light board fixed in the photograph, so it moves, blurs and shrinks with the camera).

Each video is written with its truth as `<video>.json` (:class:`RealisticTruth`): the transitions
(kind and frame span), the shots (camera, lighting, subject, measured text area) and the keyframes.

    truth = make_realistic_video("v.mp4", [ShotSpec("coffee", 48), ShotSpec("rocket", 48, pan=(6, 0))],
                                 [TransitionSpec("dissolve", 12)], gop=48, bitrate=60_000)
    records = make_realistic_set("out/")        # the benchmark set (benchmarks/scene_detection.py)

`python -m ea_data.realistic OUT_DIR` writes the benchmark set. Needs `scikit-image`
(`pip install 'ea-data[realistic]'`).
"""

from __future__ import annotations

import argparse
import functools
import math
import os
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from ea_core.atomic import atomic_write, atomic_write_json

from .scoring.text import LINE_MARGIN

#: Photographs from skimage.data used as scenes (grey ones are stacked to RGB).
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "motorcycle", "camera", "coins", "brick", "grass",
          "gravel", "hubble_deep_field", "immunohistochemistry", "clock", "moon")
#: Transition kinds; all but "cut" are gradual and span `length` frames.
TRANSITIONS = ("cut", "fade", "dissolve", "wipe")
GRADUAL = ("fade", "dissolve", "wipe")
_FONT = cv2.FONT_HERSHEY_SIMPLEX


@functools.cache
def load_photo(name: str) -> np.ndarray:
    """A photograph from `skimage.data` as `(H, W, 3)` uint8 RGB (read-only, cached)."""
    if name not in PHOTOS:
        raise ValueError(f"unknown photo {name!r}; choose one of {PHOTOS}")
    try:
        from skimage import data
    except ImportError as e:
        raise ImportError("realistic videos need scikit-image: pip install 'ea-data[realistic]'") from e
    img = data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(data, name)()
    img = np.asarray(img)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    img = np.ascontiguousarray(img[..., :3].astype(np.uint8))
    img.setflags(write=False)
    return img


@dataclass
class SubjectSpec:
    """A moving subject: a soft-edged elliptical cut-out of `photo` (centre `crop_center`, fractions of
    the photo), `size` of the frame height, starting at `position` (fractions of the frame) and moving
    `velocity` output pixels per frame (with a small vertical bob, as a walking subject)."""

    photo: str = "chelsea"
    crop_center: tuple[float, float] = (0.5, 0.4)
    size: float = 0.45
    position: tuple[float, float] = (0.2, 0.55)
    velocity: tuple[float, float] = (2.0, 0.0)


@dataclass
class SignSpec:
    """Text on a light board fixed in the photograph at `position` (fractions of the photo); glyphs
    `glyph_height` photo pixels tall (the camera's zoom sets their size in the frame)."""

    text: str = "OPEN"
    position: tuple[float, float] = (0.3, 0.3)
    glyph_height: float = 10.0


@dataclass
class ShotSpec:
    """One shot of `num_frames` frames of `photo` seen by a moving camera.

    Camera: `view` is the visible fraction of the photo's width at frame 0, `center` the view centre
    (fractions of the photo); `pan` output pixels per frame (x, y); `zoom` the per-frame zoom factor
    (1.01 = 1 % closer each frame); `shake` the hand-held tremor amplitude in output pixels; `blur`
    averages the camera path over half a frame interval (motion blur).
    Light: `flash_at` frames lit by a flash (gain 2.2, then 1.4 the frame after); `exposure` =
    (start, length, gain) an auto-exposure ramp from `gain` back to 1; `shade` the depth (0..1) of tree
    shadows cast on the scene: bands fixed in the photograph (so they pass with the pan), which also
    fall on the subject as it passes, while the camera's auto-exposure follows the mean brightness
    with a lag of a few frames. `noise` is the sensor noise
    (std, grey levels). `subtitle` is burned in at the bottom with glyphs `subtitle_height` of the
    frame height tall.
    """

    photo: str
    num_frames: int
    view: float = 0.55
    center: tuple[float, float] = (0.5, 0.5)
    pan: tuple[float, float] = (0.0, 0.0)
    zoom: float = 1.0
    shake: float = 0.0
    blur: bool = False
    flash_at: tuple[int, ...] = ()
    exposure: tuple[int, int, float] | None = None
    shade: float | None = None
    noise: float = 2.0
    subject: SubjectSpec | None = None
    sign: SignSpec | None = None
    subtitle: str = ""
    subtitle_height: float = 0.07
    seed: int = 0


@dataclass
class TransitionSpec:
    """How a shot ends and the next begins: "cut", or a gradual "fade" (through black), "dissolve" or
    "wipe" (a vertical edge sweeping left to right) lasting `length` frames."""

    kind: str = "cut"
    length: int = 0


@dataclass
class TransitionTruth:
    """A transition: hard cut (`start == end` = first frame of the new shot) or a gradual one whose mixed
    frames are `[start, end)` (frame `end` is the first clean frame of the new shot)."""

    kind: str
    start: int
    end: int


@dataclass
class ShotTruth:
    """A shot's clean frames `[start_frame, end_frame)` and what was drawn in it.

    `text_area` is the mean over the shot's frames of the union of its text lines' boxes (tight glyph
    box grown by LINE_MARGIN glyph heights, the definition ea_data.scoring.text measures) over the
    frame area; `sign_area` / `subtitle_area` the same for the sign or the subtitle alone.
    `camera_speed` is the mean pan speed (output px/frame, without shake); `subject_speed` likewise.
    """

    start_frame: int
    end_frame: int
    photo: str
    camera_speed: float
    zoom: float
    shake: float
    subject_speed: float
    lighting: list[str]
    text_area: float
    sign_area: float
    subtitle_area: float
    spec: dict


@dataclass
class RealisticTruth:
    """Ground truth of a realistic video. `cuts` are the hard cuts (first frame of the new shot);
    `transitions` all transitions in order; `keyframes` the decoded frames coded as keyframes;
    `keyframe_jump` the mean absolute decoded-frame difference into a keyframe over the median one
    elsewhere (grey levels ratio; 0 when there is no keyframe after frame 0)."""

    path: str
    name: str
    fps: float
    width: int
    height: int
    num_frames: int
    gop: int
    bitrate: int | None
    crf: int | None
    cuts: list[int]
    transitions: list[TransitionTruth]
    shots: list[ShotTruth]
    keyframes: list[int]
    keyframe_jump: float

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> RealisticTruth:
        d = dict(d)
        d["transitions"] = [TransitionTruth(**t) for t in d["transitions"]]
        d["shots"] = [ShotTruth(**s) for s in d["shots"]]
        return cls(**d)


# --------------------------------------------------------------------------------------------- shots

def _shake_path(spec: ShotSpec, fps: float, n: int) -> np.ndarray:
    """`(n, 2)` hand-held tremor offsets in output px at frame times (sub-frame times interpolate)."""
    if spec.shake <= 0:
        return np.zeros((n, 2))
    rng = np.random.default_rng(spec.seed + 7)
    t = np.arange(n) / fps
    out = np.zeros((n, 2))
    for axis in range(2):
        for _ in range(3):  # three tremor components between 2 and 7 Hz
            f, ph, a = rng.uniform(2, 7), rng.uniform(0, 2 * math.pi), rng.uniform(0.5, 1.0)
            out[:, axis] += a * np.sin(2 * math.pi * f * t + ph)
    return out * spec.shake / np.abs(out).max(0).clip(1e-6)


def fit_camera(spec: ShotSpec, photo_hw: tuple[int, int], width: int, height: int) -> tuple[float, float, float]:
    """`(view, cx, cy)`: the shot's view fraction and start centre (photo px), adjusted so that the
    whole camera path (pan, zoom out, shake margin) stays inside the photograph (no mirrored border
    ever enters the frame). The view only shrinks, and the start centre is moved as little as needed."""
    ph, pw = photo_hw
    n = spec.num_frames
    grow = max(1.0, spec.zoom ** -n)  # zooming out widens the view
    margin = 1.0 + 4 * spec.shake / width
    px, py = abs(spec.pan[0]) * n, abs(spec.pan[1]) * n  # output px travelled
    # view * pw * (grow * margin + px / width) <= pw, and likewise for the height.
    view = min(spec.view, 0.98 / (grow * margin + px / width),
               0.98 * ph / (pw * (grow * margin * height + py) / width))
    z = width / (view * pw)
    half_w, half_h = grow * margin * width / (2 * z), grow * margin * height / (2 * z)
    tx, ty = spec.pan[0] * n / z, spec.pan[1] * n / z  # photo px travelled (signed)
    lo_x, hi_x = half_w - min(tx, 0), pw - half_w - max(tx, 0)
    lo_y, hi_y = half_h - min(ty, 0), ph - half_h - max(ty, 0)
    cx = float(np.clip(spec.center[0] * pw, lo_x, max(lo_x, hi_x)))
    cy = float(np.clip(spec.center[1] * ph, lo_y, max(lo_y, hi_y)))
    return float(view), cx, cy


def _camera_matrix(spec: ShotSpec, photo_hw: tuple[int, int], t: float, shake: np.ndarray,
                   width: int, height: int) -> np.ndarray:
    """2x3 affine matrix from photo to output pixels at (fractional) frame time `t`."""
    view, cx0, cy0 = fit_camera(spec, photo_hw, width, height)
    z0 = width / (view * photo_hw[1])
    z = z0 * spec.zoom ** t
    cx = cx0 + spec.pan[0] * t / z0
    cy = cy0 + spec.pan[1] * t / z0
    i = min(int(t), len(shake) - 1)
    j = min(i + 1, len(shake) - 1)
    sx, sy = shake[i] + (shake[j] - shake[i]) * (t - int(t)) if len(shake) else (0.0, 0.0)
    return np.array([[z, 0, width / 2 - z * cx + sx], [0, z, height / 2 - z * cy + sy]], np.float64)


def _glyph_mask(text: str, glyph_height: float, shape: tuple[int, int], origin_center: tuple[float, float],
                thickness: int | None = None) -> tuple[np.ndarray, float]:
    """`(H, W)` uint8 coverage of `text` centred at `origin_center` with glyphs ~`glyph_height` px tall."""
    (_, th), _ = cv2.getTextSize(text, _FONT, 1.0, 2)
    scale = glyph_height / th
    thick = thickness or max(1, round(scale * 1.6))
    (tw, th), _ = cv2.getTextSize(text, _FONT, scale, thick)
    mask = np.zeros(shape, np.uint8)
    org = (int(round(origin_center[0] - tw / 2)), int(round(origin_center[1] + th / 2)))
    cv2.putText(mask, text, org, _FONT, scale, 255, thick, cv2.LINE_AA)
    return mask, scale


def _line_area(mask: np.ndarray) -> tuple[float, np.ndarray | None]:
    """Text-area fraction and `(H, W)` bool line box of one line's coverage mask (glyph pixels > 127)."""
    ys, xs = np.nonzero(mask > 127)
    if len(xs) == 0:
        return 0.0, None
    h, w = mask.shape
    x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    m = LINE_MARGIN * (y1 - y0)
    box = np.zeros((h, w), bool)
    box[max(0, round(y0 - m)):max(0, round(y1 + m)), max(0, round(x0 - m)):max(0, round(x1 + m))] = True
    return float(box.mean()), box


def _photo_with_sign(spec: ShotSpec) -> tuple[np.ndarray, np.ndarray | None]:
    """The shot's photo (float32 RGB) with its sign painted in, and the sign's glyph coverage in photo px."""
    photo = load_photo(spec.photo).astype(np.float32)
    if spec.sign is None:
        return photo, None
    s = spec.sign
    ph, pw = photo.shape[:2]
    c = (s.position[0] * pw, s.position[1] * ph)
    glyphs, _ = _glyph_mask(s.text, s.glyph_height, (ph, pw), c)
    ys, xs = np.nonzero(glyphs)
    pad = 0.6 * s.glyph_height
    x0, x1 = int(xs.min() - pad), int(xs.max() + pad)
    y0, y1 = int(ys.min() - pad), int(ys.max() + pad)
    photo = photo.copy()
    photo[max(0, y0):y1, max(0, x0):x1] = (225, 222, 210)  # a light board
    a = glyphs.astype(np.float32)[..., None] / 255
    photo = photo * (1 - a) + np.array((25, 25, 35), np.float32) * a
    return photo, glyphs


def _subject_sprite(subj: SubjectSpec, height: int) -> tuple[np.ndarray, np.ndarray]:
    """`(h, w, 3)` float32 RGB cut-out and its `(h, w, 1)` soft elliptical alpha."""
    src = load_photo(subj.photo)
    sh = max(4, int(subj.size * height))
    sw = int(sh * 0.8)
    ph, pw = src.shape[:2]
    side = int(min(ph, pw) * 0.5)
    cx, cy = int(subj.crop_center[0] * pw), int(subj.crop_center[1] * ph)
    crop = src[max(0, cy - side // 2):cy + side // 2, max(0, cx - int(side * 0.4)):cx + int(side * 0.4)]
    sprite = cv2.resize(crop, (sw, sh), interpolation=cv2.INTER_AREA).astype(np.float32)
    yy, xx = np.mgrid[0:sh, 0:sw]
    r = ((xx - sw / 2) / (sw / 2)) ** 2 + ((yy - sh / 2) / (sh / 2)) ** 2
    alpha = np.clip((1 - r) * 6, 0, 1).astype(np.float32)[..., None]
    return sprite, alpha


def _gain(spec: ShotSpec, i: int) -> float:
    """Scalar lighting gain of frame `i`: flash and auto-exposure ramp."""
    g = 1.0
    if i in spec.flash_at:
        g *= 2.2
    elif i - 1 in spec.flash_at:
        g *= 1.4
    if spec.exposure is not None:
        start, length, gain0 = spec.exposure
        if i < start:
            g *= gain0
        elif i < start + length:
            u = (i - start) / length
            g *= gain0 + (1 - gain0) * (3 * u * u - 2 * u ** 3)
    return g


def _shade_field(spec: ShotSpec, photo_hw: tuple[int, int]) -> np.ndarray | None:
    """`(H, W)` float32 light factor over the photograph: soft vertical bands of shade (tree shadows)."""
    if not spec.shade:
        return None
    ph, pw = photo_hw
    rng = np.random.default_rng(spec.seed + 11)
    bands = np.zeros(pw, np.float32)
    for _ in range(max(3, pw // 60)):
        a, w = int(rng.integers(0, pw)), int(rng.integers(pw // 30, pw // 8))
        bands[a:a + w] = 1.0
    bands = cv2.GaussianBlur(bands[None, :], (0, 0), sigmaX=max(1.0, pw / 200))[0]
    return np.repeat((1 - spec.shade * bands)[None, :], ph, axis=0)


def render_shot(spec: ShotSpec, width: int, height: int, fps: float) -> tuple[np.ndarray, dict]:
    """Render a shot to `(F, H, W, 3)` float32 RGB frames (0..255, before noise and clipping); returns
    `(frames, text)` where `text` holds the per-frame text-area truth ("sign", "subtitle", "union")."""
    photo, sign_glyphs = _photo_with_sign(spec)
    n = spec.num_frames
    shake = _shake_path(spec, fps, n + 1)
    sprite = _subject_sprite(spec.subject, height) if spec.subject is not None else None
    sub_mask = None
    if spec.subtitle:
        sub_mask, _ = _glyph_mask(spec.subtitle, spec.subtitle_height * height, (height, width),
                                  (width / 2, height * 0.88))
        outline = cv2.dilate(sub_mask, np.ones((3, 3), np.uint8))
    subs = [0.0 if sub_mask is None else _line_area(sub_mask)[0]] * n
    sub_box = None if sub_mask is None else _line_area(sub_mask)[1]
    frames = np.empty((n, height, width, 3), np.float32)
    sign_areas, union_areas = [], []
    shade = _shade_field(spec, photo.shape[:2])
    exposure = None  # auto-exposure gain, following the mean light with a lag
    for i in range(n):
        times = [i + u for u in np.linspace(-0.25, 0.25, 4)] if spec.blur else [float(i)]
        acc = np.zeros((height, width, 3), np.float32)
        for t in times:
            m = _camera_matrix(spec, photo.shape[:2], max(t, 0.0), shake, width, height)
            acc += cv2.warpAffine(photo, m, (width, height), flags=cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_REFLECT_101)
        frame = acc / len(times)
        light = None
        if shade is not None:
            m = _camera_matrix(spec, photo.shape[:2], float(i), shake, width, height)
            light = cv2.warpAffine(shade, m, (width, height), flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_REFLECT_101)
            frame *= light[..., None]
        if sprite is not None:
            img, alpha = sprite
            s = spec.subject
            x = int(round(s.position[0] * width + s.velocity[0] * i))
            y = int(round(s.position[1] * height + s.velocity[1] * i + 2 * math.sin(i * 2 * math.pi / 10)))
            h, w = img.shape[:2]
            x0, y0 = x - w // 2, y - h // 2
            fx0, fy0, fx1, fy1 = max(0, x0), max(0, y0), min(width, x0 + w), min(height, y0 + h)
            if fx1 > fx0 and fy1 > fy0:
                a = alpha[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0]
                lit = 1.0 if light is None else float(light[min(max(y, 0), height - 1), min(max(x, 0), width - 1)])
                frame[fy0:fy1, fx0:fx1] = (frame[fy0:fy1, fx0:fx1] * (1 - a)
                                           + lit * img[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0] * a)
        g = _gain(spec, i)
        if light is not None:
            target = 1.0 / max(float(light.mean()), 0.2)  # exposure that would undo the mean shade
            exposure = target if exposure is None else exposure + 0.35 * (target - exposure)
            g *= exposure
        frame = frame * g
        boxes = []
        if sign_glyphs is not None:
            m = _camera_matrix(spec, photo.shape[:2], float(i), shake, width, height)
            g = cv2.warpAffine(sign_glyphs, m, (width, height), flags=cv2.INTER_LINEAR)
            area, box = _line_area(g)
            sign_areas.append(area)
            if box is not None:
                boxes.append(box)
        if sub_mask is not None:
            a = sub_mask.astype(np.float32)[..., None] / 255
            o = outline.astype(np.float32)[..., None] / 255
            frame = frame * (1 - o) + 20 * o  # dark outline, then white glyphs
            frame = frame * (1 - a) + 245 * a
            boxes.append(sub_box)
        union_areas.append(float(np.logical_or.reduce(boxes).mean()) if boxes else 0.0)
        frames[i] = frame
    text = {"sign": float(np.mean(sign_areas)) if sign_areas else 0.0, "subtitle": float(np.mean(subs)),
            "union": float(np.mean(union_areas))}
    return frames, text


def _lighting(spec: ShotSpec) -> list[str]:
    out = [f"flash@{f}" for f in spec.flash_at]
    if spec.exposure is not None:
        out.append(f"exposure_ramp@{spec.exposure[0]}+{spec.exposure[1]}")
    if spec.shade is not None:
        out.append("shade")
    return out


# ------------------------------------------------------------------------------------------ encoding

def encode_h264(path: str | os.PathLike, frames: np.ndarray, fps: float, gop: int, bitrate: int | None = None,
                crf: int | None = None) -> list[int]:
    """Write `(F, H, W, 3)` uint8 RGB frames as H.264 mp4 with a keyframe every `gop` frames (and only
    there: x264 scene-cut detection is off), at `bitrate` bits/s (ABR) or constant `crf`; atomic.

    Returns the indices of the frames coded as keyframes.
    """
    import av

    if (bitrate is None) == (crf is None):
        raise ValueError("give exactly one of bitrate and crf")
    f, h, w, _ = frames.shape
    if h % 2 or w % 2:
        raise ValueError(f"H.264 (yuv420p) needs even width and height, got {w}x{h}")
    keyframes: list[int] = []

    def encode(tmp: Path) -> None:
        with av.open(str(tmp), mode="w") as container:
            stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            stream.gop_size = gop
            params = f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=0"
            opts = {"preset": "veryfast", "x264-params": params}
            if bitrate is not None:
                stream.bit_rate = int(bitrate)
            else:
                opts["crf"] = str(crf)
            stream.options = opts
            for frame in frames:
                vf = av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format="yuv420p")
                for packet in stream.encode(vf):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        with av.open(str(tmp)) as container:
            for i, packet in enumerate(p for p in container.demux(video=0) if p.size):
                if packet.is_keyframe:
                    keyframes.append(i)

    atomic_write(path, encode)
    return keyframes


def keyframe_jump(path: str | os.PathLike, keyframes: list[int]) -> float:
    """Mean absolute grey-level difference between each keyframe and the frame before it, over the
    median difference between consecutive frames elsewhere (decoded from the file)."""
    from ea_vae.video_io import iter_frames

    diffs, prev = [], None
    for _, rgb in iter_frames(path):
        g = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
        if prev is not None:
            diffs.append(float(np.abs(g - prev).mean()))
        prev = g
    d = np.array(diffs)  # d[k] is the difference into frame k + 1
    at = [k - 1 for k in keyframes if 0 < k <= len(d)]
    if not at:
        return 0.0
    rest = np.delete(d, at)
    return float(d[at].mean() / max(np.median(rest), 1e-6))


# --------------------------------------------------------------------------------------------- video

def _blend(kind: str, a: np.ndarray, b: np.ndarray, k: int, length: int) -> np.ndarray:
    """Frame `k` of `length` of a dissolve or wipe from frame `a` to frame `b` (float32)."""
    u = (k + 1) / (length + 1)
    if kind == "dissolve":
        return a * (1 - u) + b * u
    edge = np.clip((np.arange(a.shape[1]) - u * (a.shape[1] + 8) + 4) / 8, 0, 1)  # soft vertical edge
    return b * (1 - edge)[None, :, None] + a * edge[None, :, None]


def make_realistic_video(path: str | os.PathLike, shots: list[ShotSpec], transitions: list[TransitionSpec],
                         width: int = 224, height: int = 128, fps: float = 24.0, gop: int = 48,
                         bitrate: int | None = 80_000, crf: int | None = None, name: str = "") -> RealisticTruth:
    """Render `shots` joined by `transitions` (one fewer), encode, and return (and write) the truth.

    A dissolve or wipe of L frames overlaps the last L frames of one shot with the first L of the
    next; a fade of L frames darkens the last L//2 frames of one shot to black and brightens the first
    L - L//2 of the next from black. Sensor noise is added to every frame (also in transitions).
    """
    if len(transitions) != len(shots) - 1:
        raise ValueError(f"{len(shots)} shots need {len(shots) - 1} transitions, got {len(transitions)}")
    if width % 2 or height % 2:
        raise ValueError(f"width and height must be even, got {width}x{height}")
    rng = np.random.default_rng(sum(s.seed for s in shots) + len(shots))
    out: list[np.ndarray] = []
    shot_truth, trans_truth = [], []
    for k, spec in enumerate(shots):
        frames, text = render_shot(spec, width, height, fps)
        tr = transitions[k - 1] if k else None
        if tr is not None and tr.kind not in TRANSITIONS:
            raise ValueError(f"transition kind must be one of {TRANSITIONS}, got {tr.kind!r}")
        gradual = tr is not None and tr.kind in GRADUAL
        if gradual and (tr.length < 2 or tr.length >= min(spec.num_frames, shots[k - 1].num_frames)):
            raise ValueError(f"a {tr.kind} of {tr.length} frames does not fit shots of "
                             f"{shots[k - 1].num_frames} and {spec.num_frames} frames")
        start = len(out)
        if tr is None:
            out.extend(frames)
        elif tr.kind == "cut":
            trans_truth.append(TransitionTruth("cut", start, start))
            out.extend(frames)
        elif tr.kind == "fade":
            n_out = tr.length // 2
            n_in = tr.length - n_out
            for j in range(n_out):
                out[start - n_out + j] = out[start - n_out + j] * (1 - (j + 1) / (n_out + 1)) * 0.999
            for j in range(n_in):
                frames[j] = frames[j] * ((j + 1) / (n_in + 1))
            trans_truth.append(TransitionTruth("fade", start - n_out, start + n_in))
            out.extend(frames)
            start = start + n_in
        else:
            first = start - tr.length
            for j in range(tr.length):
                out[first + j] = _blend(tr.kind, out[first + j], frames[j], j, tr.length)
            out.extend(frames[tr.length:])
            trans_truth.append(TransitionTruth(tr.kind, first, start))
        shot_truth.append((start, spec, text))
    video = np.stack(out)
    sigma = np.array([s.noise for s in _per_frame(shots, shot_truth, len(video))], np.float32)
    video += rng.standard_normal(video.shape, dtype=np.float32) * sigma[:, None, None, None]
    video = np.clip(video, 0, 255).round().astype(np.uint8)
    keyframes = encode_h264(path, video, fps, gop, bitrate, crf)
    ends = [t.start for t in trans_truth] + [len(video)]
    shots_out = []
    for (start, spec, text), end in zip(shot_truth, ends):
        shots_out.append(ShotTruth(
            start_frame=start, end_frame=end, photo=spec.photo, camera_speed=float(math.hypot(*spec.pan)),
            zoom=spec.zoom, shake=spec.shake,
            subject_speed=0.0 if spec.subject is None else float(math.hypot(*spec.subject.velocity)),
            lighting=_lighting(spec), text_area=text["union"], sign_area=text["sign"],
            subtitle_area=text["subtitle"], spec=asdict(spec)))
    truth = RealisticTruth(
        path=str(path), name=name or Path(path).stem, fps=fps, width=width, height=height,
        num_frames=len(video), gop=gop, bitrate=bitrate, crf=crf,
        cuts=[t.start for t in trans_truth if t.kind == "cut"], transitions=trans_truth, shots=shots_out,
        keyframes=keyframes, keyframe_jump=keyframe_jump(path, keyframes))
    _write_json(Path(str(path) + ".json"), truth.to_json())
    return truth


def _per_frame(shots: list[ShotSpec], shot_truth: list, n: int) -> list[ShotSpec]:
    """The shot spec each output frame belongs to (for its noise level)."""
    starts = [s for s, _, _ in shot_truth]
    return [shots[max(0, int(np.searchsorted(starts, i, side="right")) - 1)] for i in range(n)]


# ----------------------------------------------------------------------------------------------- set

def realistic_set_specs(seed: int = 0, fps: float = 24.0) -> list[dict]:
    """The benchmark set: named videos covering the failure modes of real footage.

    Each item: `{"name", "shots", "transitions", "gop", "bitrate"}` (arguments of make_realistic_video).
    """
    S, T = ShotSpec, TransitionSpec
    sec = int(fps)
    rng = np.random.default_rng(seed)
    items = [
        # A static surveillance-like shot at low bitrate: keyframe quality jumps, nothing else.
        dict(name="static_keyframes_long", gop=2 * sec, bitrate=40_000,
             shots=[S("coffee", 10 * sec, view=0.6, noise=3.0, seed=1)], transitions=[]),
        dict(name="static_keyframes_short", gop=sec // 2, bitrate=50_000,
             shots=[S("camera", 5 * sec, noise=3.0, seed=2), S("clock", 5 * sec, noise=3.0, seed=3)],
             transitions=[T("cut")]),
        # Following riders past light and shade: fast pan, shade bands sweeping fast, motion blur.
        dict(name="pan_light_shade", gop=2 * sec, bitrate=120_000,
             shots=[S("motorcycle", 5 * sec, view=0.35, center=(0.2, 0.5), pan=(7, 0), shade=0.55, blur=True,
                      subject=SubjectSpec("astronaut", (0.45, 0.3), velocity=(0.3, 0), position=(0.4, 0.5)),
                      seed=4),
                    S("rocket", 4 * sec, view=0.4, center=(0.2, 0.5), pan=(8, 1), shade=0.6, blur=True, seed=5,
                      subject=SubjectSpec("chelsea", velocity=(-0.3, 0), position=(0.6, 0.6))),
                    S("grass", 4 * sec, view=0.4, center=(0.3, 0.5), pan=(-9, 0), shade=0.5, blur=True,
                      seed=6)],
             transitions=[T("cut"), T("cut")]),
        # Hand-held shots with a moving subject, cut to each other.
        dict(name="handheld_subject", gop=sec, bitrate=100_000,
             shots=[S("brick", 4 * sec, shake=3.0, subject=SubjectSpec("chelsea", velocity=(2.5, 0)), seed=7),
                    S("gravel", 4 * sec, shake=4.0, subject=SubjectSpec("astronaut", (0.45, 0.3), velocity=(-3, 0),
                                                                       position=(0.8, 0.5)), seed=8),
                    S("astronaut", 4 * sec, shake=2.5, blur=True, seed=9)],
             transitions=[T("cut"), T("cut")]),
        # Zoom and lighting: a zoom in with a flash, an auto-exposure ramp after a cut.
        dict(name="zoom_flash_exposure", gop=2 * sec, bitrate=90_000,
             shots=[S("rocket", 5 * sec, view=0.7, zoom=1.012, flash_at=(30, 71), seed=10),
                    S("chelsea", 5 * sec, exposure=(0, 18, 0.45), pan=(1.5, 0), seed=11),
                    S("coins", 4 * sec, zoom=0.99, view=0.4, flash_at=(20,), seed=12)],
             transitions=[T("cut"), T("cut")]),
        # Hard cuts inside fast motion between similar photographs (grey textures), with motion blur.
        dict(name="fast_motion_cuts", gop=sec, bitrate=150_000,
             shots=[S("gravel", 3 * sec, view=0.4, pan=(10, 2), blur=True, seed=13),
                    S("grass", 3 * sec, view=0.4, pan=(-10, 3), blur=True, seed=14),
                    S("brick", 3 * sec, view=0.4, pan=(9, -4), blur=True, shake=2.0, seed=15),
                    S("gravel", 3 * sec, view=0.3, center=(0.7, 0.6), pan=(-8, 0), blur=True, seed=16)],
             transitions=[T("cut"), T("cut"), T("cut")]),
        # Gradual transitions between moving shots.
        dict(name="gradual_transitions", gop=2 * sec, bitrate=100_000,
             shots=[S("astronaut", 4 * sec, pan=(2, 0), seed=17), S("coffee", 4 * sec, zoom=1.006, seed=18),
                    S("motorcycle", 4 * sec, pan=(-3, 0), seed=19), S("chelsea", 4 * sec, shake=2.0, seed=20),
                    S("rocket", 4 * sec, pan=(0, 1.5), seed=21)],
             transitions=[T("dissolve", 12), T("fade", 16), T("wipe", 10), T("dissolve", 20)]),
        dict(name="fades_and_wipes", gop=sec, bitrate=80_000,
             shots=[S("hubble_deep_field", 4 * sec, pan=(1, 1), seed=22), S("camera", 4 * sec, seed=23),
                    S("immunohistochemistry", 4 * sec, pan=(3, 0), blur=True, seed=24),
                    S("moon", 4 * sec, zoom=1.005, seed=25)],
             transitions=[T("fade", 12), T("wipe", 8), T("fade", 20)]),
    ]
    # Random edits of random shots (all effects drawn at random), for more cuts of each kind.
    photos = [p for p in PHOTOS]
    for v in range(4):
        shots, trans = [], []
        for k in range(5):
            n = int(rng.integers(2 * sec, 4 * sec))
            fast = rng.random() < 0.4
            speed = rng.uniform(5, 10) if fast else rng.uniform(0, 2.5)
            ang = rng.uniform(0, 2 * math.pi)
            shots.append(ShotSpec(
                photo=str(rng.choice(photos)), num_frames=n, view=float(rng.uniform(0.35, 0.7)),
                center=(float(rng.uniform(0.3, 0.7)), float(rng.uniform(0.3, 0.7))),
                pan=(round(speed * math.cos(ang), 2), round(0.4 * speed * math.sin(ang), 2)),
                zoom=float(rng.choice([1.0, 1.008, 0.993])), shake=float(rng.choice([0.0, 0.0, 2.0, 3.5])),
                blur=bool(fast), flash_at=(int(rng.integers(5, n - 5)),) if rng.random() < 0.2 else (),
                shade=0.5 if fast and rng.random() < 0.5 else None,
                subject=SubjectSpec(str(rng.choice(["chelsea", "astronaut", "coffee"])),
                                    velocity=(float(rng.uniform(-3, 3)), 0.0),
                                    position=(float(rng.uniform(0.3, 0.7)), 0.55)) if rng.random() < 0.3 else None,
                seed=100 + 10 * v + k))
            if k:
                kind = str(rng.choice(["cut", "cut", "cut", "fade", "dissolve", "wipe"]))
                trans.append(TransitionSpec(kind, 0 if kind == "cut" else int(rng.integers(8, 18))))
        items.append(dict(name=f"random_{v}", gop=int(rng.choice([sec // 2, sec, 3 * sec])),
                          bitrate=int(rng.choice([60_000, 100_000, 200_000])), shots=shots, transitions=trans))
    return items


def make_realistic_set(out_dir: str | os.PathLike, seed: int = 0, width: int = 224, height: int = 128,
                       fps: float = 24.0, names: list[str] | None = None) -> list[RealisticTruth]:
    """Write the benchmark set (see `realistic_set_specs`) into `out_dir` (`<name>.mp4` + `.json`)."""
    out = Path(out_dir)
    truths = []
    for item in realistic_set_specs(seed, fps):
        if names is not None and item["name"] not in names:
            continue
        truths.append(make_realistic_video(out / f"{item['name']}.mp4", item["shots"], item["transitions"],
                                           width, height, fps, gop=item["gop"], bitrate=item["bitrate"],
                                           name=item["name"]))
    return truths


def _write_json(path: Path, obj) -> None:
    atomic_write_json(path, obj, indent=1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ea_data.realistic",
                                description="Write the realistic scene-detection evaluation set (real photographs "
                                            "from scikit-image, camera motion, lighting, low-bitrate H.264).")
    p.add_argument("out_dir")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    truths = make_realistic_set(a.out_dir, a.seed)
    n = sum(len(t.transitions) for t in truths)
    print(f"wrote {len(truths)} videos ({n} transitions) to {a.out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
