"""Text-area score: the fraction of the frame covered by text lines, found by OCR and measured tightly.

Definition (shared with the synthetic generator's truth, ea_data.synthetic): a text line covers its
tight glyph box grown on every side by LINE_MARGIN (0.25) times the glyph box height; the text area of
a frame is the union of its lines' boxes over the frame area, averaged over the scored frames.

How it is measured:

1. Only the text *detector* of rapidocr 3.x (PP-OCR DB detection, ONNX, models ship in the wheel;
   runs offline) is run, at a bounded working size (`limit_side_len`, longer side; default 480 px):
   classification and recognition are switched off. Its boxes find the lines but are loose (the DB
   box grows the glyphs by 0.4-0.9 glyph heights, varying from word to word), so they only locate.
2. Implausible boxes are ignored: a box whose shorter side exceeds `max_line_height` of the frame's
   shorter side, and a box whose long/short side ratio is below `min_aspect` (the detector's false
   detections on textures are near-square patches; text lines are elongated).
3. Each remaining box is refined on the full-resolution luminance crop of its bounding rectangle:
   ink is split from its surroundings by Otsu thresholds (the crop's, and the Otsu thresholds of its
   brighter and its darker part, each polarity), so text on a plate, on a banner or directly on a
   textured background all separate. Glyphs are the connected ink components that do not touch the
   crop's border (the detector box always leaves a margin around its text), sit on the box's centre
   line and are sized like characters; the candidate threshold with the most glyphs wins. A box
   without glyphs is dropped (a false detection). The tight glyph boxes are merged into lines
   (vertically overlapping, horizontally close), grown by the margin and rasterised.

The refinement is numpy/OpenCV on a few small crops; the detector dominates the cost.
"""

from __future__ import annotations

import cv2
import numpy as np

#: Frames OCR'd per clip by default: the centres of 2 equal halves of the sampled frames. OCR is the
#: costly scorer; the reference pipeline OCRs 1 (the middle) frame per clip.
DEFAULT_TEXT_FRAMES = 2
#: Longer side (px) frames are shrunk to before text detection.
DEFAULT_TEXT_SIDE = 480
#: Margin of a text line's box around its tight glyph box, in glyph-box heights (the text-area definition).
LINE_MARGIN = 0.25


def spread(n: int, k: int | None) -> list[int]:
    """Indices of `k` of `n` items, the centres of `k` equal parts (all of them when k is None or >= n).

    k=1 is the middle item; k=2 the items at 1/4 and 3/4.
    """
    if k is None or k >= n:
        return list(range(n))
    if k < 1:
        raise ValueError(f"number of frames to score must be >= 1, got {k}")
    return sorted({min(n - 1, int((j + 0.5) * n / k)) for j in range(k)})


def box_sides(box) -> tuple[float, float]:
    """(shorter, longer) side of a quadrilateral `(4, 2)`: its pairs of opposite-edge mean lengths."""
    b = np.asarray(box, np.float64)
    edges = np.linalg.norm(np.roll(b, -1, axis=0) - b, axis=1)
    a, c = (edges[0] + edges[2]) / 2, (edges[1] + edges[3]) / 2
    return float(min(a, c)), float(max(a, c))


def box_short_side(box) -> float:
    """Shorter side of a quadrilateral `(4, 2)`."""
    return box_sides(box)[0]


def _otsu(values: np.ndarray) -> float | None:
    """Otsu threshold of a 1-D uint8 array (pixels > t are the upper class); None if it has one value."""
    if values.size < 2 or values.min() == values.max():
        return None
    t, _ = cv2.threshold(values.reshape(1, -1), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return float(t)


def _glyphs(ink: np.ndarray, box_height: float) -> tuple[np.ndarray, np.ndarray]:
    """Glyph-like components of a binary crop: `(K, 4)` x0, y0, x1, y1 (exclusive) of each, and the
    `(h, w)` bool mask of their pixels.

    A glyph does not touch the crop's border, is 0.2-0.9 `box_height` tall (the detector box is taller
    than its text), has its centre within 0.25 `box_height` of the crop's centre line, and is at least
    0.4 times as tall as the tallest such component (dots, counters and specks are left out).
    """
    h, w = ink.shape
    n, labels, stats, _ = cv2.connectedComponentsWithStats(ink.astype(np.uint8), connectivity=8)
    x0, y0, cw, ch, area = (stats[1:, i] for i in range(5))
    x1, y1 = x0 + cw, y0 + ch
    inside = (x0 > 0) & (y0 > 0) & (x1 < w) & (y1 < h)
    sized = (ch >= 0.2 * box_height) & (ch <= 0.9 * box_height) & (area >= 3)
    centred = np.abs((y0 + y1) / 2 - h / 2) <= 0.25 * box_height
    keep = inside & sized & centred
    if keep.any():
        keep &= ch >= 0.4 * ch[keep].max()
    return np.stack([x0, y0, x1, y1], -1)[keep], np.concatenate([[False], keep])[labels]


def tight_glyph_box(gray: np.ndarray, box) -> tuple[float, float, float, float] | None:
    """Tight box `(x0, y0, x1, y1)` (exclusive, frame pixels) of the glyphs inside a detector box.

    `gray` is the `(H, W)` uint8 luminance frame, `box` a detector quadrilateral `(4, 2)`. Candidate
    inks: pixels above / below the crop's Otsu threshold and above the Otsu threshold of its brighter
    part / below that of its darker part; the candidate with the most glyphs (`_glyphs`) gives the
    box. None when no candidate has a glyph.
    """
    b = np.asarray(box, np.float64)
    height, width = gray.shape
    x0, y0 = (max(0, int(np.floor(v)) - 1) for v in b.min(0))
    x1, y1 = min(width, int(np.ceil(b[:, 0].max())) + 1), min(height, int(np.ceil(b[:, 1].max())) + 1)
    crop = gray[y0:y1, x0:x1]
    if crop.shape[0] < 4 or crop.shape[1] < 4:
        return None
    box_height = box_sides(b)[0]
    flat = crop.ravel()
    inks = []  # (ink mask, bright text?)
    t = _otsu(flat)
    if t is not None:
        inks += [(crop > t, True), (crop <= t, False)]
        hi, lo = _otsu(flat[flat > t]), _otsu(flat[flat <= t])
        if hi is not None:
            inks.append((crop > hi, True))
        if lo is not None:
            inks.append((crop <= lo, False))
    found = [(_glyphs(ink, box_height), ink, bright) for ink, bright in inks]
    if not found or max(len(g[0][0]) for g in found) == 0:
        return None
    (boxes, glyph_px), ink, bright = max(found, key=lambda g: len(g[0][0]))
    # The glyph edge at half contrast: threshold midway between the text's level and its surroundings'
    # (the pixels around the glyphs that are not ink), kept to pixels next to the found glyphs.
    gx0, gy0 = np.maximum(boxes[:, :2].min(0) - 2, 0)
    gx1, gy1 = boxes[:, 2:].max(0) + 2
    region, near = crop[gy0:gy1, gx0:gx1].astype(np.float32), glyph_px[gy0:gy1, gx0:gx1]
    around = region[~ink[gy0:gy1, gx0:gx1]]
    if around.size:
        text_level = np.percentile(region[near], 95 if bright else 5)
        half = (text_level + np.median(around)) / 2
        edge = (region > half) if bright else (region < half)
        edge &= cv2.dilate(near.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        if edge.any():
            ys, xs = np.nonzero(edge)
            return (float(x0 + gx0 + xs.min()), float(y0 + gy0 + ys.min()),
                    float(x0 + gx0 + xs.max() + 1), float(y0 + gy0 + ys.max() + 1))
    gx0, gy0 = boxes[:, :2].min(0)
    gx1, gy1 = boxes[:, 2:].max(0)
    return float(x0 + gx0), float(y0 + gy0), float(x0 + gx1), float(y0 + gy1)


def merge_lines(boxes: list[tuple[float, float, float, float]]) -> list[tuple[float, float, float, float]]:
    """Merge tight glyph boxes of one text line (detected as several words) into line boxes.

    Two boxes are one line when they overlap vertically by more than half the shorter one's height
    and the horizontal gap between them is below the taller one's height (a word space is less).
    """
    out = [tuple(b) for b in boxes]
    merged = True
    while merged:
        merged = False
        for i in range(len(out)):
            for j in range(i + 1, len(out)):
                a, b = out[i], out[j]
                ha, hb = a[3] - a[1], b[3] - b[1]
                overlap = min(a[3], b[3]) - max(a[1], b[1])
                gap = max(a[0], b[0]) - min(a[2], b[2])
                if overlap > 0.5 * min(ha, hb) and gap < max(ha, hb):
                    out[i] = (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))
                    del out[j]
                    merged = True
                    break
            if merged:
                break
    return out


def lines_mask(boxes: list[tuple[float, float, float, float]], height: int, width: int,
               margin: float = LINE_MARGIN) -> np.ndarray:
    """`(H, W)` bool union of glyph boxes `(x0, y0, x1, y1)` each grown by `margin` of its height per side.

    A pixel is covered when its centre lies inside a grown box (so a box covers its area on average).
    """
    mask = np.zeros((height, width), bool)
    for x0, y0, x1, y1 in boxes:
        m = margin * (y1 - y0)
        c0, r0 = max(0, round(x0 - m)), max(0, round(y0 - m))
        mask[r0:max(r0, round(y1 + m)), c0:max(c0, round(x1 + m))] = True
    return mask


class TextAreaScorer:
    """rapidocr text detection. Call on `(N, H, W, 3)` uint8 RGB frames for the mean text-area fraction.

    Args:
        max_frames: frames per clip that are run through OCR (see `spread`); None = all sampled frames.
        limit_side_len: the detector shrinks frames whose longer side exceeds this (pixels).
        box_thresh: minimum detector confidence of a text box (rapidocr's default 0.5).
        max_line_height: boxes whose shorter side is above this fraction of the frame's shorter
            side are not text lines and are ignored.
        min_aspect: boxes whose longer/shorter side ratio is below this are not text lines and are
            ignored (0 keeps every box).
        num_threads: onnxruntime intra-op threads. 1 by default: the pipeline runs one process per
            core, and idle onnxruntime pool threads spin (CPU time burnt for nothing).
    """

    def __init__(self, max_frames: int | None = DEFAULT_TEXT_FRAMES, limit_side_len: int = DEFAULT_TEXT_SIDE,
                 box_thresh: float = 0.5, max_line_height: float = 0.5, min_aspect: float = 2.0,
                 num_threads: int = 1):
        from rapidocr import RapidOCR

        self.max_frames = max_frames
        self.max_line_height = max_line_height
        self.min_aspect = min_aspect
        self.engine = RapidOCR(params={
            "Global.use_det": True, "Global.use_cls": False, "Global.use_rec": False,
            "Global.log_level": "critical",  # an empty detection is normal here, not a warning
            "Det.limit_type": "max", "Det.limit_side_len": int(limit_side_len),
            "Det.box_thresh": float(box_thresh),
            "EngineConfig.onnxruntime.intra_op_num_threads": int(num_threads),
        })

    def text_mask(self, frame: np.ndarray) -> np.ndarray:
        """`(H, W)` bool mask of the text lines (tight glyph box + margin) in one `(H, W, 3)` uint8 RGB frame."""
        if frame.ndim != 3 or frame.shape[-1] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"text scorer expects (H, W, 3) uint8 RGB frames, got {frame.shape} {frame.dtype}")
        bgr = np.ascontiguousarray(frame[..., ::-1])  # rapidocr takes OpenCV's BGR order
        out = self.engine(bgr, use_det=True, use_cls=False, use_rec=False)
        boxes = self.plausible(getattr(out, "boxes", None), frame.shape[:2])
        if not boxes:
            return np.zeros(frame.shape[:2], bool)
        gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        tight = [t for t in (tight_glyph_box(gray, b) for b in boxes) if t is not None]
        return lines_mask(merge_lines(tight), *frame.shape[:2])

    def plausible(self, boxes, shape: tuple[int, int]) -> list:
        """The boxes that can be text lines in a frame of `shape` (H, W) (see the module docstring)."""
        limit = self.max_line_height * min(shape)
        out = []
        for b in [] if boxes is None else boxes:
            short, long = box_sides(b)
            if short <= limit and long >= self.min_aspect * short:
                out.append(b)
        return out

    def __call__(self, frames: np.ndarray) -> float | None:
        """Mean text-area fraction (0..1) over the scored frames; None when there are no frames."""
        if len(frames) == 0:
            return None
        return float(np.mean([self.text_mask(frames[i]).mean() for i in spread(len(frames), self.max_frames)]))
