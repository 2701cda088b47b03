"""Text-area score: the fraction of the frame covered by OCR-detected text boxes.

Only the text *detector* of rapidocr 3.x (PP-OCR DB detection, ONNX, models ship in the wheel; runs
offline) is run: classification and recognition are switched off. The detected quadrilaterals of a
frame are rasterised into one mask (overlaps count once); the score is the mask's mean, averaged
over the scored frames. Note the detector boxes the text line itself (its glyphs grown by about
0.65 glyph heights on every side), not any plate or banner drawn behind it.

Implausible boxes are ignored: a box whose shorter side exceeds `max_line_height` of the frame's
shorter side (on some textures the DB detector returns one box covering most of the frame), and a
box whose long/short side ratio is below `min_aspect`: the detector boxes text *lines*, which are
elongated, while its false detections on textures (checkers, stripes, blobs; seen on the synthetic
videos) are near-square patches with aspect 1.1-1.5. A lone large character or a two-letter word is
therefore not counted; that is the price of no false text on textured scenes.

Frames are run at a bounded working size (`limit_side_len`, longer side; default 480 px): text that
covers a meaningful fraction of the frame (the 1 % filter) is still well above the detector's
smallest readable size there, and cost stays fixed whatever the source resolution.
"""

from __future__ import annotations

import cv2
import numpy as np

#: Frames OCR'd per clip by default: the centres of 2 equal halves of the sampled frames. OCR is the
#: costly scorer; the reference pipeline OCRs 1 (the middle) frame per clip.
DEFAULT_TEXT_FRAMES = 2
#: Longer side (px) frames are shrunk to before text detection.
DEFAULT_TEXT_SIDE = 480


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


def boxes_mask(boxes, height: int, width: int) -> np.ndarray:
    """Union of polygons (each `(P, 2)` x, y pixel coordinates) as an `(H, W)` bool mask."""
    mask = np.zeros((height, width), np.uint8)
    if boxes is not None and len(boxes):
        polys = [np.round(np.asarray(b, np.float64) * 16).astype(np.int32) for b in boxes]
        cv2.fillPoly(mask, polys, 1, shift=4)  # 4 fractional bits keep sub-pixel box corners
    return mask.astype(bool)


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
        """`(H, W)` bool mask of the text boxes detected in one `(H, W, 3)` uint8 RGB frame."""
        if frame.ndim != 3 or frame.shape[-1] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"text scorer expects (H, W, 3) uint8 RGB frames, got {frame.shape} {frame.dtype}")
        bgr = np.ascontiguousarray(frame[..., ::-1])  # rapidocr takes OpenCV's BGR order
        out = self.engine(bgr, use_det=True, use_cls=False, use_rec=False)
        boxes = getattr(out, "boxes", None)
        return boxes_mask(self.plausible(boxes, frame.shape[:2]), *frame.shape[:2])

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
