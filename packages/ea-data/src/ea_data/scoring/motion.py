"""Motion score: mean optical-flow magnitude between consecutive sampled frames.

Units: pixels per sampled-frame step, measured at a working resolution whose shorter side is
`work_size` pixels (default 256; frames are resized to it, keeping the aspect ratio). So a camera pan
of v source pixels per frame, sampled every k frames from a video whose shorter side is S pixels,
scores about ``v * k * 256 / S``; the score does not depend on the source resolution.

Camera shake is not motion: the global (camera) translation between sampled frames is estimated by
the median of the dense flow, its cumulative path over the clip is fitted by a smooth camera path (a quadratic
in time: pans, accelerating pans), and the difference - hand-held tremor, which at a 2 fps sampling
rate looks like a random jump between samples - is removed from every pixel's flow before the
magnitudes are averaged. So a steady pan scores its speed, a subject moving in front of a shaking
camera scores the subject's motion, and a static scene shot by a shaking hand scores about as low
as a static one (tests/ea_data/test_scoring_realistic.py). The dense flow is also computed after
undoing the phase-correlation shift of the pair (the shift is added back), and the flow that
predicts the pair better is kept, so pans much faster than the dense flow's own range (tens of
pixels per step at 2 fps) are measured too.

Backends:
- "opencv": OpenCV dense flow, weight-free (the default). `opencv_flow="dis"` (default) is DIS
  flow (medium preset); `"farneback"` is Farneback, as in the reference pipeline. On synthetic pans
  (tests/ea_data) DIS read smooth and fine textures within ~5 % of the true shift up to ~20 px per
  step at half Farneback's cost, while Farneback under-read them 2-5x and lost shifts above ~10 px
  (scoring a fast pan below a slow one), hence DIS by default.
- "raft": torchvision's RAFT architecture (``raft_small`` / ``raft_large``, built with weights=None)
  with a state dict loaded from a local file (safetensors or ``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import os

import cv2
import numpy as np
import torch

from ea_core.files import load_state_dict

DEFAULT_WORK_SIZE = 256


def work_resolution(height: int, width: int, work_size: int = DEFAULT_WORK_SIZE, multiple: int = 1):
    """(height, width) with the shorter side scaled to `work_size`, both rounded to `multiple`."""
    s = work_size / min(height, width)
    return (max(multiple, round(height * s / multiple) * multiple),
            max(multiple, round(width * s / multiple) * multiple))


def _check_frames(frames: np.ndarray) -> None:
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"motion scorer expects (N, H, W, 3) uint8 RGB frames, got {frames.shape} {frames.dtype}")


def farneback_flow(prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
    """Dense Farneback flow `(H, W, 2)` float32 (pixels) from gray `prev` to gray `nxt` (both `(H, W)` uint8)."""
    # 5 pyramid levels reach displacements of tens of pixels (fast pans at a 2 fps sampling rate).
    return cv2.calcOpticalFlowFarneback(prev, nxt, None, pyr_scale=0.5, levels=5, winsize=15, iterations=3,
                                        poly_n=5, poly_sigma=1.2, flags=0)


def dis_flow(prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
    """Dense DIS flow `(H, W, 2)` float32 (pixels) from gray `prev` to gray `nxt` (medium preset)."""
    return cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM).calc(prev, nxt, None)


OPENCV_FLOWS = {"farneback": farneback_flow, "dis": dis_flow}


def global_shift(prev: np.ndarray, nxt: np.ndarray) -> tuple[float, float]:
    """Global translation `(dx, dy)` in pixels from gray `prev` to gray `nxt` (phase correlation)."""
    win = cv2.createHanningWindow(prev.shape[::-1], cv2.CV_32F)
    (dx, dy), _ = cv2.phaseCorrelate(prev.astype(np.float32), nxt.astype(np.float32), win)
    return float(dx), float(dy)


def smooth_camera(shifts: np.ndarray) -> np.ndarray:
    """The smooth part of per-step camera shifts `(K, 2)`: derivative of a quadratic (K >= 4 steps),
    linear (K = 2, 3) or constant fit of the cumulative camera path; K = 1 is returned as is."""
    k = len(shifts)
    if k < 2:
        return shifts.copy()
    t = np.arange(k + 1, dtype=np.float64)
    path = np.concatenate([np.zeros((1, 2)), np.cumsum(shifts, axis=0)])
    deg = 2 if k >= 4 else 1
    coef = np.polyfit(t, path, deg)  # (deg + 1, 2)
    fitted = np.stack([np.polyval(coef[:, j], t) for j in range(2)], axis=1)
    return np.diff(fitted, axis=0)


def stabilised_magnitude(flows: list[np.ndarray], shifts: np.ndarray, valid: list[np.ndarray] | None = None) -> float:
    """Mean flow magnitude after removing camera shake.

    `flows` are `(H, W, 2)` total flows per step, `shifts` the `(K, 2)` global camera shifts; every
    flow loses the step's shake (its shift minus the smooth camera path). `valid` optionally masks
    the pixels to average (`(H, W)` bool per step).
    """
    shake = shifts - smooth_camera(shifts)
    mags = []
    for k, f in enumerate(flows):
        m = np.linalg.norm(f - shake[k].astype(np.float32), axis=-1)
        mags.append(float(m[valid[k]].mean()) if valid is not None and valid[k].any() else float(m.mean()))
    return float(np.mean(mags))


def opencv_motion_score(frames: np.ndarray, work_size: int = DEFAULT_WORK_SIZE,
                        method: str = "dis") -> float | None:
    """Mean OpenCV flow magnitude, camera shake removed, over consecutive frame pairs of `(N, H, W, 3)` uint8 frames.

    `method` is "farneback" or "dis". The global shift of each pair (phase correlation) is undone
    before the dense flow and added back after it. Returns pixels per step at the work resolution
    (see module docstring); None for fewer than 2 frames.
    """
    if method not in OPENCV_FLOWS:
        raise ValueError(f"opencv flow method must be one of {list(OPENCV_FLOWS)}, got {method!r}")
    flow = OPENCV_FLOWS[method]
    _check_frames(frames)
    if len(frames) < 2:
        return None
    h, w = work_resolution(*frames.shape[1:3], work_size)
    interp = cv2.INTER_AREA if h < frames.shape[1] else cv2.INTER_LINEAR
    gray = [cv2.resize(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), (w, h), interpolation=interp) for f in frames]
    flows, shifts, valid = [], [], []
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for a, b in zip(gray[:-1], gray[1:]):
        # Two explanations of the pair: the dense flow alone, and the dense flow after undoing the
        # correlation peak's shift (a fast pan beyond the flow's range; but on a repetitive texture the
        # peak can be an alias, and it can be a large subject). Keep the one that predicts `a` better.
        best = None
        gx, gy = global_shift(a, b)
        for sx, sy in ((0.0, 0.0), (gx, gy)) if abs(gx) + abs(gy) > 1 else ((0.0, 0.0),):
            m = np.float32([[1, 0, sx], [0, 1, sy]])
            # b_aligned(x) = b(x + s): the shift undone, so the dense flow sees the remaining motion only.
            b_al = b if (sx, sy) == (0.0, 0.0) else cv2.warpAffine(
                b, m, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
            total = flow(a, b_al) + np.float32([sx, sy])
            mx, my = xx + total[..., 0], yy + total[..., 1]
            inside = (mx >= 0) & (mx <= w - 1) & (my >= 0) & (my <= h - 1)
            pred = cv2.remap(b, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            err = float(cv2.absdiff(a, pred)[inside].mean()) if inside.any() else np.inf
            if best is None or err < best[0]:
                best = (err, total, inside)
        _, total, inside = best
        flows.append(total)
        valid.append(inside)
        # The camera's shift: the median flow (robust to a subject).
        med = np.median(total[inside], axis=0) if inside.any() else np.zeros(2)
        shifts.append((float(med[0]), float(med[1])))
    return stabilised_magnitude(flows, np.array(shifts, np.float64), valid)


class RaftMotion:
    """RAFT flow with weights from a local file. Call it on `(N, H, W, 3)` uint8 frames for the score.

    `model` is "small" (torchvision raft_small) or "large" (raft_large); `num_flow_updates` is RAFT's
    number of recurrent refinements; `batch_size` frame pairs run at once.
    """

    def __init__(self, weights: str | os.PathLike, model: str = "small", device: str | torch.device = "cpu",
                 work_size: int = DEFAULT_WORK_SIZE, num_flow_updates: int = 12, batch_size: int = 8):
        from torchvision.models.optical_flow import raft_large, raft_small

        if work_size < 128:  # RAFT's correlation pyramid needs feature maps of 16+ px at stride 8
            raise ValueError(f"RAFT needs work_size >= 128 px, got {work_size}")
        builders = {"small": raft_small, "large": raft_large}
        if model not in builders:
            raise ValueError(f"RAFT model must be 'small' or 'large', got {model!r}")
        net = builders[model](weights=None, progress=False)
        sd = load_state_dict(weights)
        try:
            net.load_state_dict(sd)
        except RuntimeError as e:
            raise ValueError(f"{weights}: not a RAFT-{model} state dict ({e})") from e
        self.net = net.eval().to(device)
        self.device = torch.device(device)
        self.work_size, self.num_flow_updates, self.batch_size = work_size, num_flow_updates, batch_size

    def _prepare(self, frames: np.ndarray) -> torch.Tensor:
        """`(N, H, W, 3)` uint8 -> `(N, 3, h, w)` float in [-1, 1], h and w multiples of 8 (RAFT's stride)."""
        h, w = work_resolution(*frames.shape[1:3], self.work_size, multiple=8)
        x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
        x = torch.nn.functional.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
        return (x / 127.5 - 1.0).to(self.device)

    @torch.inference_mode()
    def flow(self, frames: np.ndarray) -> torch.Tensor:
        """Flow between consecutive frames: `(N - 1, 2, h, w)` float32, pixels at the work resolution."""
        _check_frames(frames)
        if len(frames) < 2:
            raise ValueError(f"RAFT flow needs at least 2 frames, got {len(frames)}")
        x = self._prepare(frames)
        out = []
        for i in range(0, len(x) - 1, self.batch_size):
            a, b = x[i:i + self.batch_size], x[i + 1:i + 1 + self.batch_size]
            a = a[:len(b)]
            out.append(self.net(a, b, num_flow_updates=self.num_flow_updates)[-1].float().cpu())
        return torch.cat(out)

    def __call__(self, frames: np.ndarray) -> float | None:
        """Mean flow magnitude, camera shake removed (pixels per step at the work resolution; the
        camera shift of a step is its median flow); None for fewer than 2 frames."""
        _check_frames(frames)
        if len(frames) < 2:
            return None
        flows = self.flow(frames).permute(0, 2, 3, 1).numpy()  # (K, h, w, 2)
        shifts = np.median(flows.reshape(len(flows), -1, 2), axis=1).astype(np.float64)
        return stabilised_magnitude(list(flows), shifts)
