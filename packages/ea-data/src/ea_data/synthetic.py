"""Synthetic captioned videos with known ground truth, for tests and the built-in demo data set.

Each video is a sequence of scenes separated by hard cuts. A scene is a textured background that pans
at a known velocity (a camera pan: every background pixel moves by exactly that many pixels per frame),
shapes that move and rotate on top of it, and optionally a subtitle: a line of white text, on a black
plate or (`SceneSpec.text_plate=False`) drawn directly on the background, whose text area (its tight
glyph box grown by LINE_MARGIN glyph heights, the definition ea_data.scoring.text measures) is a known
fraction of the frame. Backgrounds and shapes keep every colour channel inside [40, 215], so the text
(pure white) and the plate (pure black) can be measured back from the decoded file.

Everything the generator decides is returned as :class:`VideoTruth` (and written next to the data as
JSON), so tests can compare what a detector measures with what was drawn:

    truth = make_video("clip.mp4", [SceneSpec.random(rng, 40, motion="fast", text_area=0.03)], fps=8)
    truth.cuts            # frame indices where a new scene starts
    truth.scenes[0].camera_velocity, truth.scenes[0].text_area, truth.scenes[0].caption

`python -m ea_data.synthetic OUT_DIR` writes a small data set (videos, images, metadata.jsonl).

The demo world (`--demo`, :func:`make_demo_dataset`) is what `uv run apps/demo` trains on: each scene
shows one object whose colour, shape and direction of motion its caption states in words,
`demo_caption(color, shape, direction)` ("a red circle moves left"), over a dark grey background that
never contains an object colour. Vocabularies: `COLOR_NAMES` (name -> RGB the object is drawn with),
`SHAPES`, `DIRECTIONS`. `HELD_OUT` lists 16 `(color, shape, direction)` triples that no training scene
shows (every colour and direction among them), for testing composition; `render_demo_clip` draws a
ground-truth clip of any triple directly.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from ea_core.atomic import atomic_open, atomic_write, atomic_write_json
from ea_vae.video_io import write_video

from .scoring.text import LINE_MARGIN

#: Colour range of backgrounds and shapes; the text (white) and its plate (black) use values outside it.
COLOR_LO, COLOR_HI = 40, 215

BACKGROUNDS = ("checker", "stripes", "noise", "blobs")
SHAPES = ("circle", "square", "triangle", "star")
COLOR_NAMES = {
    "red": (200, 50, 50), "green": (50, 190, 60), "blue": (50, 70, 205), "yellow": (210, 200, 45),
    "purple": (150, 50, 190), "orange": (212, 130, 40), "cyan": (45, 190, 200), "white": (212, 212, 212),
}
#: Camera speed in pixels per frame for each motion class.
MOTION_SPEEDS = {"static": 0.0, "slow": 1.0, "fast": 4.0}
WORDS = ("OPEN", "SALE", "HELLO", "NEWS", "VIDEO", "MUSIC", "TODAY", "LIVE", "WORLD", "SPORT")


@dataclass
class ShapeSpec:
    """One shape: `size` is its radius in pixels; velocities are per frame (pixels, degrees)."""

    kind: str
    color: str
    size: float
    position: tuple[float, float]
    velocity: tuple[float, float] = (0.0, 0.0)
    angular_velocity: float = 0.0


@dataclass
class SceneSpec:
    """A scene of `num_frames` frames. `camera_velocity` is the background pan in pixels/frame (x, y).

    `text` is drawn as one line whose text area (glyph box + LINE_MARGIN) is about `text_area` of the
    frame (0 = no text), on a black plate the size of that box when `text_plate`, else directly on
    the background.
    """

    num_frames: int
    background: str = "checker"
    palette: tuple[str, str] = ("blue", "white")
    camera_velocity: tuple[float, float] = (0.0, 0.0)
    shapes: list[ShapeSpec] = field(default_factory=list)
    text: str = ""
    text_area: float = 0.0
    seed: int = 0
    text_plate: bool = True

    @property
    def static(self) -> bool:
        return self.camera_velocity == (0.0, 0.0) and all(
            s.velocity == (0.0, 0.0) and s.angular_velocity == 0.0 for s in self.shapes)

    @classmethod
    def random(cls, rng: np.random.Generator, num_frames: int, motion: str = "slow",
               text_area: float = 0.0, num_shapes: int | None = None) -> SceneSpec:
        """A random scene whose camera moves at the speed of `motion` ("static", "slow", "fast")."""
        if motion not in MOTION_SPEEDS:
            raise ValueError(f"motion must be one of {list(MOTION_SPEEDS)}, got {motion!r}")
        speed = MOTION_SPEEDS[motion]
        angle = rng.uniform(0, 2 * math.pi)
        velocity = (round(speed * math.cos(angle), 3), round(speed * math.sin(angle), 3))
        names = list(COLOR_NAMES)
        palette = tuple(rng.choice(names, size=2, replace=False).tolist())
        shapes = []
        for _ in range(int(rng.integers(1, 3)) if num_shapes is None else num_shapes):
            moving = motion != "static"
            shapes.append(ShapeSpec(
                kind=str(rng.choice(SHAPES)), color=str(rng.choice(names)), size=float(rng.uniform(0.08, 0.16)),
                position=(float(rng.uniform(0.2, 0.8)), float(rng.uniform(0.2, 0.6))),
                velocity=(float(rng.uniform(-1, 1) * speed), float(rng.uniform(-1, 1) * speed)) if moving
                else (0.0, 0.0),
                angular_velocity=float(rng.uniform(2, 8)) if moving else 0.0))
        text = " ".join(rng.choice(WORDS, size=2).tolist()) if text_area > 0 else ""
        return cls(num_frames=num_frames, background=str(rng.choice(BACKGROUNDS)), palette=palette,
                   camera_velocity=velocity, shapes=shapes, text=text, text_area=text_area,
                   seed=int(rng.integers(2**31)))


@dataclass
class SceneTruth:
    """What was drawn in one scene. Frames are `[start_frame, end_frame)`; times in seconds.

    `text_area` is the exact text area over the frame area (0..1): the tight box of the drawn glyph
    pixels (`text_box`) grown by LINE_MARGIN glyph heights on every side; `camera_speed` in pixels/frame.
    """

    start_frame: int
    end_frame: int
    start_time: float
    end_time: float
    camera_velocity: tuple[float, float]
    camera_speed: float
    static: bool
    text: str
    text_area: float
    text_box: tuple[int, int, int, int] | None  # x0, y0, x1, y1 (exclusive): tight box of the glyph pixels
    caption: str
    shapes: list[dict]


@dataclass
class VideoTruth:
    """Ground truth of a generated video; `cuts` are the first frames of scenes 2..n."""

    path: str
    fps: float
    width: int
    height: int
    num_frames: int
    cuts: list[int]
    scenes: list[SceneTruth]

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> VideoTruth:
        d = dict(d)
        d["scenes"] = [SceneTruth(**s) for s in d["scenes"]]
        return cls(**d)


def _texture(kind: str, palette: tuple[str, str], height: int, width: int,
             rng: np.random.Generator) -> np.ndarray:
    """A periodic (H, W, 3) uint8 texture in two palette colours, values inside [COLOR_LO, COLOR_HI]."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    # Every texture is periodic over (height, width), so rolling it is a pure shift with no seam.
    if kind == "checker":
        period = int(rng.choice([p for p in range(8, 25) if height % (2 * p) == 0 and width % (2 * p) == 0]
                                or [height // 2]))
        t = (((yy // period) + (xx // period)) % 2).astype(np.float32)
    elif kind == "stripes":
        ky, kx = int(rng.integers(-6, 7)), int(rng.integers(3, 10))
        t = 0.5 + 0.5 * np.sin(2 * math.pi * (kx * xx / width + ky * yy / height))
    elif kind == "noise":
        t = _periodic_noise(rng, height, width, sigma=3.0)
    elif kind == "blobs":
        t = _periodic_noise(rng, height, width, sigma=10.0)
    else:
        raise ValueError(f"unknown background {kind!r}; choose one of {BACKGROUNDS}")
    # Texture detail: a little fine noise gives optical flow something to track in flat areas.
    t = np.clip(t * 0.85 + 0.15 * rng.random(t.shape, dtype=np.float32), 0, 1)[..., None]
    a, b = (np.array(COLOR_NAMES.get(c) or DEMO_GREYS[c], np.float32) for c in palette)
    return np.clip(a * (1 - t) + b * t, COLOR_LO, COLOR_HI).astype(np.uint8)


def _periodic_noise(rng: np.random.Generator, height: int, width: int, sigma: float) -> np.ndarray:
    """Gaussian-smoothed white noise, periodic over (height, width) (smoothing done in Fourier space)."""
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.fftfreq(width)[None, :]
    kernel = np.exp(-2 * (math.pi * sigma) ** 2 * (fx**2 + fy**2))
    t = np.fft.ifft2(np.fft.fft2(rng.standard_normal((height, width))) * kernel).real
    t = (t - t.min()) / max(t.max() - t.min(), 1e-6)
    return t.astype(np.float32)


def _shape_polygon(shape: ShapeSpec, center: tuple[float, float], radius: float, angle_deg: float):
    if shape.kind == "circle":
        n, radii = 32, [radius] * 32
    elif shape.kind == "square":
        n, radii = 4, [radius] * 4
    elif shape.kind == "triangle":
        n, radii = 3, [radius] * 3
    elif shape.kind == "star":
        n, radii = 10, [radius if i % 2 == 0 else radius * 0.45 for i in range(10)]
    else:
        raise ValueError(f"unknown shape {shape.kind!r}; choose one of {SHAPES}")
    a = np.deg2rad(angle_deg) + 2 * np.pi * np.arange(n) / n
    pts = np.stack([center[0] + np.array(radii) * np.cos(a), center[1] + np.array(radii) * np.sin(a)], -1)
    return np.round(pts * 16).astype(np.int32)  # 4 bits of sub-pixel precision for cv2


# The text-area definition is shared with the OCR scorer (ea_data.scoring.text, LINE_MARGIN): a text
# line covers its tight glyph box (the pixels drawn at least half opaque), grown on every side by
# LINE_MARGIN times the glyph box height. A scene's `text_area` is that box over the frame area.
#: Padding of the (decorative) black plate around the glyph box, in glyph heights (at least 2 px). The
#: plate is not the text area: a plate or banner may be any size; the text area is the glyphs' box.
PLATE_PADDING = 0.5
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def line_box_area(width: float, height: float, margin: float = LINE_MARGIN) -> float:
    """Area (px^2) of a text line whose tight glyph box is `width` x `height` px, grown by the margin."""
    return (width + 2 * margin * height) * (height + 2 * margin * height)


def _text_thickness(scale: float) -> int:
    return max(1, int(round(scale * 1.2)))


def _text_mask(text: str, scale: float, origin: tuple[int, int], width: int, height: int) -> np.ndarray:
    """`(H, W)` uint8 coverage (0..255) of `text` drawn alone at `origin` (bottom-left of the glyphs)."""
    mask = np.zeros((height, width), np.uint8)
    cv2.putText(mask, text, origin, _FONT, scale, 255, _text_thickness(scale), cv2.LINE_AA)
    return mask


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Tight box `(x0, y0, x1, y1)` (exclusive) of the nonzero pixels of a 2-D mask."""
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _glyph_box(text: str, scale: float) -> tuple[int, int, int, int]:
    """Exact ink box `(x0, y0, x1, y1)` (exclusive) of `text` drawn with its origin at (0, 0)."""
    (tw, th), base = cv2.getTextSize(text, _FONT, scale, _text_thickness(scale))
    pad = 4 + _text_thickness(scale)
    canvas = _text_mask(text, scale, (pad, pad + th), tw + 2 * pad, th + base + 2 * pad)
    x0, y0, x1, y1 = _bbox(canvas > 127)  # the pixels drawn at least half white, as in the video
    return x0 - pad, y0 - pad - th, x1 - pad, y1 - pad - th


def _text_layout(text: str, area: float, width: int, height: int):
    """Font scale, text origin and plate box so the text line covers `area` of the frame, near the bottom.

    The line's area is its glyph box grown by LINE_MARGIN glyph heights on every side
    (`line_box_area`); the font scale is solved numerically for the area. The plate is the glyph box
    padded by PLATE_PADDING glyph heights (at least 2 px).
    """
    target = area * width * height
    best = None
    for scale in np.linspace(0.2, 6.0, 581):
        gx0, gy0, gx1, gy1 = _glyph_box(text, float(scale))
        gw, gh = gx1 - gx0, gy1 - gy0
        m = max(2, int(round(PLATE_PADDING * gh)))
        if gw + 2 * m > width - 4 or gh + 2 * m > height // 2:
            break
        err = abs(line_box_area(gw, gh) - target)
        if best is None or err < best[0]:
            best = (err, float(scale), gw, gh, m, gx0, gy0)
    if best is None:
        raise ValueError(f"text {text!r} cannot cover {area:.3f} of a {width}x{height} frame")
    _, scale, gw, gh, m, gx0, gy0 = best
    x0, y1 = (width - gw - 2 * m) // 2, height - max(2, height // 16)
    y0 = y1 - gh - 2 * m
    plate = (x0, y0, x0 + gw + 2 * m, y1)
    return scale, (x0 + m - gx0, y0 + m - gy0), plate


def render_scene(spec: SceneSpec, width: int, height: int, start_frame: int = 0):
    """Render a scene to `(F, H, W, 3)` uint8 RGB frames; returns `(frames, text_box)`.

    `text_box` is the tight box `(x0, y0, x1, y1)` (exclusive) of the text pixels drawn at least half
    opaque (measured on the text rendered alone into a mask), None without text.
    """
    rng = np.random.default_rng(spec.seed)
    tex = _texture(spec.background, spec.palette, 2 * height, 2 * width, rng)
    frames = np.empty((spec.num_frames, height, width, 3), np.uint8)
    box = None
    if spec.text_area > 0:
        if not spec.text:
            raise ValueError("SceneSpec.text_area > 0 needs a non-empty text")
        scale, origin, plate = _text_layout(spec.text, spec.text_area, width, height)
        coverage = _text_mask(spec.text, scale, origin, width, height)
        box = _bbox(coverage > 127)
    vx, vy = spec.camera_velocity
    for i in range(spec.num_frames):
        # The background content moves by (vx, vy) pixels per frame (periodic texture: a pure shift).
        sx, sy = int(round(vx * i)), int(round(vy * i))
        frame = np.roll(tex, (sy, sx), axis=(0, 1))[:height, :width].copy()
        for shape in spec.shapes:
            cx = (shape.position[0] * width + shape.velocity[0] * i) % width
            cy = (shape.position[1] * height + shape.velocity[1] * i) % height
            pts = _shape_polygon(shape, (cx, cy), shape.size * min(width, height),
                                 shape.angular_velocity * i)
            cv2.fillPoly(frame, [pts], COLOR_NAMES[shape.color], lineType=cv2.LINE_AA, shift=4)
        if box is not None:
            if spec.text_plate:
                x0, y0, x1, y1 = plate
                frame[y0:y1, x0:x1] = 0
            cv2.putText(frame, spec.text, origin, _FONT, scale, (255, 255, 255), _text_thickness(scale), cv2.LINE_AA)
        frames[i] = frame
    return frames, box


def caption_for(spec: SceneSpec) -> str:
    """A caption describing the scene's content, motion and text, as a captioner would."""
    parts = []
    for s in spec.shapes:
        moving = s.velocity != (0.0, 0.0)
        verb = "moves and rotates" if moving and s.angular_velocity else ("moves" if moving else "rests")
        article = "an" if s.color[0] in "aeiou" else "a"
        parts.append(f"{article} {s.color} {s.kind} {verb}")
    scene = " and ".join(parts) if parts else "nothing moves"
    bg = f"{spec.palette[0]} and {spec.palette[1]} {spec.background} background"
    vx, vy = spec.camera_velocity
    if spec.static:
        camera = "The camera is static."
    else:
        horiz = "right" if vx > 0 else "left"
        vert = "down" if vy > 0 else "up"
        direction = horiz if abs(vx) >= abs(vy) else vert
        speed = "slowly" if math.hypot(vx, vy) < 2 else "quickly"
        camera = f"The background pans {speed} to the {direction}." if direction in ("left", "right") else \
            f"The background pans {speed} {direction}."
    text = f' The text "{spec.text}" is shown at the bottom.' if spec.text_area > 0 else ""
    return f"A video in which {scene} over a {bg}. {camera}{text}"


def make_video(path: str | os.PathLike, scenes: list[SceneSpec], width: int = 128, height: int = 96,
               fps: float = 8.0, crf: int = 12, caption: Callable[[SceneSpec], str] | None = None) -> VideoTruth:
    """Render `scenes` back to back (hard cuts between them) into an mp4 and return the ground truth.

    `caption` writes each scene's caption (default `caption_for`). The truth is also written as
    `<path>.json` next to the video.
    """
    if width % 2 or height % 2:
        raise ValueError(f"width and height must be even, got {width}x{height}")
    if not scenes:
        raise ValueError("make_video needs at least one scene")
    chunks, truths, start = [], [], 0
    for spec in scenes:
        frames, box = render_scene(spec, width, height)
        end = start + spec.num_frames
        area = 0.0 if box is None else line_box_area(box[2] - box[0], box[3] - box[1]) / (width * height)
        truths.append(SceneTruth(
            start_frame=start, end_frame=end, start_time=start / fps, end_time=end / fps,
            camera_velocity=tuple(spec.camera_velocity), camera_speed=float(math.hypot(*spec.camera_velocity)),
            static=spec.static, text=spec.text, text_area=area, text_box=box, caption=(caption or caption_for)(spec),
            shapes=[asdict(s) for s in spec.shapes]))
        chunks.append(frames)
        start = end
    write_video(path, np.concatenate(chunks), fps=fps, crf=crf)
    truth = VideoTruth(path=str(path), fps=fps, width=width, height=height, num_frames=start,
                       cuts=[t.start_frame for t in truths[1:]], scenes=truths)
    _write_json(Path(str(path) + ".json"), truth.to_json())
    return truth


def make_image(path: str | os.PathLike, spec: SceneSpec, width: int = 128, height: int = 96) -> dict:
    """Render the first frame of `spec` as a PNG; returns `{"path", "caption", "width", "height"}`."""
    frames, _ = render_scene(replace(spec, num_frames=1), width, height)
    path = Path(path)

    def write_png(tmp: Path) -> None:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(frames[0], cv2.COLOR_RGB2BGR)):
            raise OSError(f"{path}: could not write PNG")

    atomic_write(path, write_png)
    caption = caption_for(spec).replace("A video in which", "An image in which").replace(
        " The camera is static.", "")
    return {"path": str(path), "caption": caption, "width": width, "height": height}


def make_dataset(out_dir: str | os.PathLike, num_videos: int = 4, num_images: int = 4, seed: int = 0,
                 width: int = 128, height: int = 96, fps: float = 8.0,
                 scenes_per_video: int = 3, scene_seconds: tuple[float, float] = (3.5, 6.0),
                 text_fraction: float = 0.25) -> list[dict]:
    """Write a demo data set: `videos/*.mp4`, `images/*.png` and `metadata.jsonl`.

    Scenes cycle through static / slow / fast motion; a `text_fraction` of them carry a subtitle
    (on a plate) whose text area is 2-6 % of the frame. Each metadata line is one file: `{"file", "type", "caption",
    ...}` with, for videos, the per-scene truth (times, motion, text area, caption). Existing files
    are regenerated identically (same seed), so the call is idempotent.
    """
    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    records, motions = [], ("static", "slow", "fast")
    for v in range(num_videos):
        specs = []
        for s in range(scenes_per_video):
            n = int(round(rng.uniform(*scene_seconds) * fps))
            text = float(rng.uniform(0.02, 0.06)) if rng.random() < text_fraction else 0.0
            specs.append(SceneSpec.random(rng, n, motion=motions[(v + s) % 3], text_area=text))
        rel = f"videos/video_{v:03d}.mp4"
        truth = make_video(out / rel, specs, width, height, fps)
        records.append({"file": rel, "type": "video", "caption": " ".join(t.caption for t in truth.scenes),
                        "fps": fps, "num_frames": truth.num_frames, "width": width, "height": height,
                        "cuts": truth.cuts, "scenes": [asdict(t) for t in truth.scenes]})
    for i in range(num_images):
        spec = SceneSpec.random(rng, 1, motion="static")
        rel = f"images/image_{i:03d}.png"
        info = make_image(out / rel, spec, width, height)
        records.append({"file": rel, "type": "image", "caption": info["caption"], "width": width,
                        "height": height})
    _write_jsonl(out / "metadata.jsonl", records)
    return records


def _write_json(path: Path, obj) -> None:
    atomic_write_json(path, obj, indent=1)


def _write_jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write("".join(json.dumps(r) + "\n" for r in records))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m ea_data.synthetic",
        description="Write a synthetic captioned video data set with known cuts, motion and text area.")
    p.add_argument("out_dir", help="folder to write videos/, images/ and metadata.jsonl into")
    p.add_argument("--videos", type=int, default=4, help="number of videos (default 4)")
    p.add_argument("--images", type=int, default=4, help="number of still images (default 4)")
    p.add_argument("--scenes", type=int, default=3, help="scenes per video, separated by hard cuts (default 3)")
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--height", type=int, default=96)
    p.add_argument("--fps", type=float, default=8.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--demo", action="store_true",
                   help="write the demo world instead (make_demo_dataset: one captioned object per scene, "
                        "square frames of --width pixels, HELD_OUT combinations left out)")
    a = p.parse_args(argv)
    if a.demo:
        records = make_demo_dataset(a.out_dir, a.videos, a.images, a.seed, a.width, a.fps, a.scenes)
        n_scenes = sum(len(r.get("scenes", [])) for r in records)
        print(f"wrote the demo world: {a.videos} videos ({n_scenes} scenes) and {a.images} images to {a.out_dir}")
        return 0
    records = make_dataset(a.out_dir, a.videos, a.images, a.seed, a.width, a.height, a.fps, a.scenes)
    n_scenes = sum(len(r.get("scenes", [])) for r in records)
    print(f"wrote {a.videos} videos ({n_scenes} scenes) and {a.images} images to {a.out_dir}")
    return 0



# --------------------------------------------------------------------------------------------------
# The demo world: one object per scene whose colour, shape and direction the caption states
# --------------------------------------------------------------------------------------------------

#: Directions of motion in the demo world, and the unit step (x right, y down) of each.
DIRECTIONS = ("left", "right", "up", "down")
DIRECTION_VECTORS = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}
#: Background greys of the demo world: dark and far from every colour in COLOR_NAMES (the nearest,
#: "blue", is > 100 RGB units away), so a program finds the object by its colour.
DEMO_GREYS = {"charcoal": (46, 46, 50), "slate": (72, 74, 82), "graphite": (60, 56, 52), "ash": (88, 86, 84)}
#: Object speed in the demo world, as a fraction of the frame side per frame (at 8 fps: 0.2 of the frame
#: per second), and the pan speed of a "too fast" scene's background.
DEMO_SPEED = 0.025
DEMO_FAST_PAN = 0.08
#: Object radius as a fraction of the frame side.
DEMO_SIZE = 0.15


def demo_caption(color: str, shape: str, direction: str) -> str:
    """The demo world's caption of a `color` `shape` moving in `direction`: 'a red circle moves left'.

    Pinned: other tools (apps/generate, the evaluator, sampler studies) write prompts with it.
    """
    if color not in COLOR_NAMES:
        raise ValueError(f"unknown colour {color!r}; choose one of {list(COLOR_NAMES)}")
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; choose one of {list(SHAPES)}")
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r}; choose one of {list(DIRECTIONS)}")
    return f"a {color} {shape} moves {direction}"


def parse_demo_caption(text: str) -> tuple[str, str, str]:
    """The inverse of `demo_caption`: 'a red circle moves left' -> ('red', 'circle', 'left').

    Also reads a demo scene caption that says more after it ('... moves left under the text "..."'), in
    any letter case ('A red circle moves left.', as captioning writes it). Raises ValueError naming the
    text when it does not start with a demo caption.
    """
    words = text.strip().lower().replace(".", " ").split()
    if len(words) >= 5 and words[0] in ("a", "an") and words[3] == "moves":
        color, shape, direction = words[1], words[2], words[4]
        if color in COLOR_NAMES and shape in SHAPES and direction in DIRECTIONS:
            return color, shape, direction
    raise ValueError(f"{text!r} is not a demo caption ('a <colour> <shape> moves <direction>', "
                     f"colours {list(COLOR_NAMES)}, shapes {list(SHAPES)}, directions {list(DIRECTIONS)})")


def _held_out() -> list[tuple[str, str, str]]:
    """Two triples per colour, four per direction, every shape four times: 16 combinations."""
    triples = []
    for i, color in enumerate(COLOR_NAMES):
        for j in range(2):
            triples.append((color, SHAPES[(i + j) % len(SHAPES)], DIRECTIONS[(i + 2 * j + i // 4) % 4]))
    return triples


#: `(color, shape, direction)` combinations that never appear in the demo's training data (not in any
#: scene of `make_demo_dataset`, kept or rejected), for testing whether a model composes what it learned.
HELD_OUT: list[tuple[str, str, str]] = _held_out()
_HELD_OUT_SET = frozenset(HELD_OUT)


def demo_triples(held_out: bool = False) -> list[tuple[str, str, str]]:
    """Every `(color, shape, direction)` of the demo world outside HELD_OUT (or only HELD_OUT's)."""
    every = [(c, s, d) for c in COLOR_NAMES for s in SHAPES for d in DIRECTIONS]
    return [t for t in every if (t in _HELD_OUT_SET) == held_out]


def demo_scene(color: str, shape: str, direction: str, num_frames: int, rng: np.random.Generator,
               size: int, kind: str = "moving", text_area: float = 0.0) -> SceneSpec:
    """One demo-world scene: a `color` `shape` over a dark grey background.

    `kind`: "moving" (the object crosses DEMO_SPEED of the frame per frame in `direction`, the camera is
    still), "static" (nothing moves) or "fast" (the object moves and the background pans at
    DEMO_FAST_PAN, too fast for training). A moving object enters on the side it comes from (one
    DEMO_SIZE + 0.02 margin from the edge: a leftward object starts at the right) and crosses the frame
    towards the other side; where it is across the travel axis is random. A static object is anywhere.
    The object stays inside the frame. The scene is for square frames of `size` pixels (velocities are in
    pixels per frame).

    Why a fixed entry side: measured on a two-direction world (pixel-space VideoDiT, 64 wide, 3000 steps),
    a model whose clips start at a random place along the travel axis still generated no direction at
    all, while with the entry side fixed it generated the asked direction in 12 of 12 clips: the caption
    then decides where the object is in every frame, a signal a small model picks up in minutes.
    """
    if kind not in ("moving", "static", "fast"):
        raise ValueError(f"kind must be moving, static or fast, got {kind!r}")
    demo_caption(color, shape, direction)  # validates the vocabulary
    ux, uy = DIRECTION_VECTORS[direction]
    speed = 0.0 if kind == "static" else DEMO_SPEED
    travel = speed * (num_frames - 1)
    margin = DEMO_SIZE + 0.02
    if travel > 1 - 2 * margin:
        raise ValueError(f"{num_frames} frames at {speed} of the frame per frame leave the frame")
    along = float(rng.uniform(margin, 1 - margin - travel))  # start on the travel axis (left/top side)
    if speed > 0:
        along = margin  # enters at the edge (the draw above still happens: the other draws stay as they were)
    across = float(rng.uniform(margin, 1 - margin))
    if ux < 0 or uy < 0:
        along = 1 - along  # leftwards / upwards: start on the right / bottom side
    position = (along, across) if ux else (across, along)
    greys = list(DEMO_GREYS)
    palette = tuple(rng.choice(greys, size=2, replace=False).tolist())
    pan = (0.0, 0.0)
    if kind == "fast":
        angle = rng.uniform(0, 2 * math.pi)
        pan = (round(DEMO_FAST_PAN * size * math.cos(angle), 3), round(DEMO_FAST_PAN * size * math.sin(angle), 3))
    return SceneSpec(num_frames=num_frames, background="blobs", palette=palette, camera_velocity=pan,
                     shapes=[ShapeSpec(kind=shape, color=color, size=DEMO_SIZE, position=position,
                                       velocity=(ux * speed * size, uy * speed * size))],
                     text=" ".join(rng.choice(WORDS, size=2).tolist()) if text_area > 0 else "",
                     text_area=text_area, seed=int(rng.integers(2**31)))


def demo_scene_caption(spec: SceneSpec) -> str:
    """The caption of a demo scene: `demo_caption` for the moving object, plus what else is seen."""
    shape = spec.shapes[0]
    vx, vy = shape.velocity
    if spec.static:
        return f"a {shape.color} {shape.kind} rests"
    direction = ("right" if vx > 0 else "left") if abs(vx) >= abs(vy) else ("down" if vy > 0 else "up")
    text = demo_caption(shape.color, shape.kind, direction)
    if spec.camera_velocity != (0.0, 0.0):
        text += " as the background pans quickly"
    if spec.text_area > 0:
        text += f' under the text "{spec.text}"'
    return text


def render_demo_clip(color: str, shape: str, direction: str, num_frames: int = 9, size: int = 32,
                     seed: int = 0) -> np.ndarray:
    """A ground-truth demo clip `(F, size, size, 3)` uint8 of a moving object, drawn directly (no mp4).

    For evaluation sets and tests: the same drawing as the training videos, at any resolution.
    """
    rng = np.random.default_rng(seed)
    frames, _ = render_scene(demo_scene(color, shape, direction, num_frames, rng, size), size, size)
    return frames


def make_demo_dataset(out_dir: str | os.PathLike, num_videos: int = 80, num_images: int = 120, seed: int = 0,
                      size: int = 128, fps: float = 8.0, scenes_per_video: int = 5) -> list[dict]:
    """Write the demo world's raw data: `videos/*.mp4`, `images/*.png` and `metadata.jsonl`.

    Every video is `scenes_per_video` scenes cut hard together; each scene is one object of a training
    triple (never one of HELD_OUT) over a dark background. Most scenes are "moving" (2.5-3.2 s, what
    curation keeps); the rest give the curation its work: subtitled scenes (text area 2-5 %, rejected
    by the text filter), static scenes (motion too low), scenes whose background pans too fast (motion
    too high) and short scenes (under 2 s). Images are single frames of an object (for the VAE). Each
    metadata line has the per-scene truth and captions (`demo_scene_caption`), like `make_dataset`.
    """
    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    triples = demo_triples()
    kinds = ["moving"] * 13 + ["text", "static", "fast", "short"]
    records = []
    for v in range(num_videos):
        specs = []
        for _ in range(scenes_per_video):
            color, shape, direction = triples[int(rng.integers(len(triples)))]
            kind = kinds[int(rng.integers(len(kinds)))]
            n = int(rng.integers(8, 13)) if kind == "short" else int(round(rng.uniform(2.5, 3.2) * fps))
            spec = demo_scene(color, shape, direction, n, rng, size,
                              kind={"text": "moving", "short": "moving"}.get(kind, kind),
                              text_area=float(rng.uniform(0.02, 0.05)) if kind == "text" else 0.0)
            specs.append(spec)
        rel = f"videos/video_{v:03d}.mp4"
        truth = make_video(out / rel, specs, size, size, fps, caption=demo_scene_caption)
        records.append({"file": rel, "type": "video", "caption": " ".join(t.caption for t in truth.scenes),
                        "fps": fps, "num_frames": truth.num_frames, "width": size, "height": size,
                        "cuts": truth.cuts, "scenes": [asdict(t) for t in truth.scenes]})
    for i in range(num_images):
        color, shape, _ = triples[int(rng.integers(len(triples)))]
        spec = demo_scene(color, shape, "right", 1, rng, size, kind="static")
        rel = f"images/image_{i:03d}.png"
        make_image(out / rel, spec, size, size)
        records.append({"file": rel, "type": "image", "caption": f"a {color} {shape}", "width": size,
                        "height": size})
    _write_jsonl(out / "metadata.jsonl", records)
    return records


if __name__ == "__main__":
    raise SystemExit(main())
