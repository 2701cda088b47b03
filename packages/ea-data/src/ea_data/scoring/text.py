"""Text-area score: the fraction of the frame covered by OCR-detected text boxes.

Only the text *detector* of rapidocr 3.x (PP-OCR DB detection, ONNX, models ship in the wheel; runs
offline) is run: classification and recognition are switched off. The detected quadrilaterals of a
frame are rasterised into one mask (overlaps count once); the score is the mask's mean, averaged
over the scored frames. Note the detector boxes the text line itself (its glyphs, slightly dilated),
not any plate or banner drawn behind it. Boxes whose shorter side exceeds `max_line_height` of the
frame's shorter side are discarded: on grainy textures the DB detector can return one box covering
the whole frame (seen on synthetic noise backgrounds), and no caption line is that tall.
"""

from __future__ import annotations

import cv2
import numpy as np

#: Frames scored per clip by default (evenly spread over the sampled frames): OCR is the costly scorer.
DEFAULT_TEXT_FRAMES = 4


def spread(n: int, k: int | None) -> list[int]:
    """Indices of `k` items evenly spread over `n` (all of them when k is None or >= n)."""
    if k is None or k >= n:
        return list(range(n))
    if k < 1:
        raise ValueError(f"number of frames to score must be >= 1, got {k}")
    return sorted({int(round(x)) for x in np.linspace(0, n - 1, k)})


def box_short_side(box) -> float:
    """Shorter side of a quadrilateral `(4, 2)`: its smaller pair of opposite-edge mean lengths."""
    b = np.asarray(box, np.float64)
    edges = np.linalg.norm(np.roll(b, -1, axis=0) - b, axis=1)
    return float(min(edges[0] + edges[2], edges[1] + edges[3]) / 2)


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
        max_frames: frames per clip that are run through OCR (evenly spread); None = all sampled frames.
        limit_side_len: the detector shrinks frames whose longer side exceeds this (pixels).
        box_thresh: minimum detector confidence of a text box (rapidocr's default 0.5).
        max_line_height: boxes whose shorter side is above this fraction of the frame's shorter
            side are not text lines and are ignored.
        num_threads: onnxruntime intra-op threads (-1 = onnxruntime's default).
    """

    def __init__(self, max_frames: int | None = DEFAULT_TEXT_FRAMES, limit_side_len: int = 640,
                 box_thresh: float = 0.5, max_line_height: float = 0.5, num_threads: int = -1):
        from rapidocr import RapidOCR

        self.max_frames = max_frames
        self.max_line_height = max_line_height
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
        limit = self.max_line_height * min(frame.shape[:2])
        boxes = [] if boxes is None else [b for b in boxes if box_short_side(b) <= limit]
        return boxes_mask(boxes, *frame.shape[:2])

    def __call__(self, frames: np.ndarray) -> float | None:
        """Mean text-area fraction (0..1) over the scored frames; None when there are no frames."""
        if len(frames) == 0:
            return None
        return float(np.mean([self.text_mask(frames[i]).mean() for i in spread(len(frames), self.max_frames)]))
