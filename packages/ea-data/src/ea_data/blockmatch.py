"""Shot boundaries by motion- and light-compensated block matching ("blockmatch" in ea_data.scenes).

A hard cut is a frame that cannot be predicted from the frames before it, even allowing for camera
motion and lighting. Each frame is shrunk to a small grey image (`width` px wide, default 96, lightly
blurred so codec noise and keyframe quality jumps average out). Two frames are compared by:

1. their global shift, from phase correlation of their locally contrast-normalised images (dividing
   by a local mean removes shading, flashes and exposure changes), with the previous step's shift as a
   second candidate (a pan is smooth);
2. for every textured `block` x `block` block of the later frame, the best normalised
   cross-correlation (NCC, invariant to gain and offset) against the earlier frame within `radius`
   px of each candidate shift (and of where the block moved last step: subjects moving on their
   own), less `chroma_weight` times the difference of the matched blocks' chromaticity (same
   structure in another colour is another picture; chromaticity ignores gain, so light does not
   count). The mismatch is 1 - the mean over the blocks (0 = same picture, ~0.5-1 = unrelated
   pictures). Nearly black frames (mean grey below `black_level` and grey std below
   `black_contrast`: the middle of a fade, or a very dark scene) give no
   evidence of a cut; for the gradual test a picture against black counts as unrelated.

Hard cut at frame i: min(mismatch(i-1, i), mismatch(i-2, i), mismatch(i-1, i+1)) >= `cut_threshold`.
All three comparisons straddle a cut, while a single failed comparison inside a shot (a flash on
one frame, a motion-estimation slip) leaves at least one of them low. A cut between two shots of
like texture (periodic stripes match themselves at many shifts; the same colours) can fail the
comparisons by less: then the three must still reach `cut_low`, the step must stand out from the
shot's own steps (`cut_contrast` times their level, the larger of the median step over the `lag`
frames before and the step after), and most of the picture must have changed (the median block's
mismatch >= `cut_spread`), not one object: a subject that jumps or wraps around over a plain
background fails only its own blocks.

Gradual transitions (fades through black, dissolves, wipes): frames `lag` apart (default 8) are
compared the same way, with the sum of the steps' shifts in between as the candidate shift. Across a
transition that lag straddles, the two frames show different shots, so their mismatch rises over a
run of frames and falls again; inside a shot it stays at the shot's own level (its median over the
recent past). A run of at least `gradual_min_run` frames above both `gradual_threshold` and that level plus
`gradual_margin` that no hard cut explains is a transition - unless one frame in it changes
`cut_contrast` times more than the others (median) and by `cut_threshold`: then that frame is a
hard cut. The frames of a dissolve must also change from step to step more than the shot before
it did (mean step mismatch >= `gradual_step_min` and >= `gradual_step_ratio` times the shot's median):
a lag mismatch that is only a tracking slip over a smooth pan is not a transition.
A transition is a "fade" when the frames in it
get nearly black (contrast below a quarter of the shots' around it), else a "dissolve".

Frame numbers are decoded-frame indices; events come out in increasing order, a few frames (up to
`2 * lag`) after the frames they describe.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import cv2
import numpy as np

#: Event kinds.
CUT, FADE, DISSOLVE = "cut", "fade", "dissolve"


@dataclass
class BlockMatchConfig:
    """Settings of the block-matching detector (measured on the realistic and synthetic sets, see
    benchmarks/scene_detection.py). Sizes are pixels of the `width`-px working frame."""

    cut_threshold: float = 0.4
    cut_low: float = 0.25  # a weaker cut that stands out `cut_contrast` times from its shot's steps
    cut_spread: float = 0.15  # ... and changes most blocks: median block mismatch at least this
    gradual_threshold: float = 0.3
    gradual_margin: float = 0.4
    gradual_min_run: int = 3
    cut_contrast: float = 4.0
    gradual_step_min: float = 0.04
    gradual_step_ratio: float = 1.5
    lag: int = 8
    width: int = 96
    block: int = 12
    radius: int = 3
    min_block_std: float = 1.0
    blur_sigma: float = 0.8
    chroma_weight: float = 4.0
    black_contrast: float = 8.0
    black_level: float = 32.0


@dataclass
class _Frame:
    gray: np.ndarray  # (h, w) float32, blurred
    norm: np.ndarray  # (h, w) float32, locally contrast-normalised (for phase correlation)
    chroma: np.ndarray  # (h, w, 2) float32 chromaticity r / (r + g + b), g / (r + g + b): gain-free colour
    block_std: np.ndarray  # (h // block, w // block) grey std of each block
    contrast: float
    brightness: float
    shift: tuple[float, float] = (0.0, 0.0)  # global shift from the previous frame
    flow: np.ndarray | None = None  # (h // block, w // block, 2) each block's displacement from the previous frame


class BlockMatchDetector:
    """Streaming detector: :meth:`push` each frame in order, then :meth:`finish`.

    Both return events `(kind, start, end)`: `("cut", i, i)` for a hard cut before frame i, or
    `("fade" | "dissolve", start, end)` for a gradual transition over frames `[start, end)`.
    """

    def __init__(self, config: BlockMatchConfig | None = None):
        self.cfg = config or BlockMatchConfig()
        if self.cfg.lag < 3:
            raise ValueError(f"blockmatch lag must be >= 3 frames, got {self.cfg.lag}")
        self.frames: deque[_Frame] = deque(maxlen=self.cfg.lag + 1)
        self.d1: dict[int, float] = {}
        self.d1_median: dict[int, float] = {}  # the median block's step mismatch
        self.d2: dict[int, float] = {}
        self.dlag: dict[int, float] = {}
        self.contrast: dict[int, float] = {}
        self.cuts: list[int] = []
        self.base: deque[float] = deque(maxlen=2 * self.cfg.lag)
        self.run: list[int] = []  # frames of the current elevated lag-mismatch run
        self.n = 0
        self._window = None

    # ------------------------------------------------------------------ frame comparison
    def prepare(self, rgb: np.ndarray) -> _Frame:
        """`(H, W, 3)` uint8 RGB -> the small blurred grey frame and its normalised version."""
        h, w = rgb.shape[:2]
        size = (self.cfg.width, max(self.cfg.block, round(h * self.cfg.width / w)))
        col = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA).astype(np.float32)
        col = cv2.GaussianBlur(col, (0, 0), self.cfg.blur_sigma)
        small = col @ np.array([0.299, 0.587, 0.114], np.float32)
        norm = small / (cv2.GaussianBlur(small, (0, 0), 3.0) + 8.0)
        chroma = col[..., :2] / (col.sum(-1, keepdims=True) + 24.0)
        B = self.cfg.block
        hb, wb = small.shape[0] // B, small.shape[1] // B
        block_std = small[:hb * B, :wb * B].reshape(hb, B, wb, B).std(axis=(1, 3))
        return _Frame(small, norm, chroma, block_std, float(small.std()), float(small.mean()))

    def is_black(self, f: _Frame) -> bool:
        """Nearly black: dark and without contrast (the middle of a fade; also a very dark scene)."""
        return f.brightness < self.cfg.black_level and f.contrast < self.cfg.black_contrast

    def _phase_shift(self, a: _Frame, b: _Frame) -> tuple[float, float]:
        if self._window is None or self._window.shape != a.norm.shape:
            self._window = cv2.createHanningWindow(a.norm.shape[::-1], cv2.CV_32F)
        (dx, dy), _ = cv2.phaseCorrelate(a.norm, b.norm, self._window)
        return float(dx), float(dy)

    def mismatch(self, a: _Frame, b: _Frame, extra: tuple[float, float] | None = None,
                 prior: np.ndarray | None = None, flow: np.ndarray | None = None,
                 black_is_change: bool = False) -> tuple[float, tuple]:
        """`(mismatch, shift)` of frame `b` against the earlier frame `a` (nan: no evidence).

        `extra` is a second candidate global shift; `prior` a `(hb, wb, 2)` per-block displacement
        candidate (where each block moved last step: a subject moving on its own); `flow`, when
        given, receives each block's found displacement. `black_is_change`: a picture compared with
        a nearly black frame counts as unrelated (1.0) instead of giving no evidence.
        """
        value, _, shift = self.compare(a, b, extra, prior, flow, black_is_change)
        return value, shift

    def compare(self, a: _Frame, b: _Frame, extra: tuple[float, float] | None = None,
                prior: np.ndarray | None = None, flow: np.ndarray | None = None,
                black_is_change: bool = False) -> tuple[float, float, tuple]:
        """:meth:`mismatch` with the median block's mismatch too: `(mismatch, median, shift)` (how much
        of the picture changed: a jumping object raises the mean, not the median)."""
        cfg = self.cfg
        a_black, b_black = self.is_black(a), self.is_black(b)
        if a_black or b_black:
            # Nearly black frames (the middle of a fade) carry no structure to compare: a picture
            # against black is a change only for the gradual test; two black frames tell nothing.
            value = 1.0 if black_is_change and a_black != b_black else float("nan")
            return value, value, (0.0, 0.0)
        shift = self._phase_shift(a, b)
        cands = [shift]
        if extra is not None and np.hypot(extra[0] - shift[0], extra[1] - shift[1]) > cfg.radius:
            cands.append(extra)
        h, w = b.gray.shape
        B, R = cfg.block, cfg.radius
        sims = []
        for by, bx in zip(*np.nonzero(b.block_std >= cfg.min_block_std)):
            y, x = by * B, bx * B
            blk = b.gray[y:y + B, x:x + B]
            best = None
            own = [] if prior is None else [tuple(prior[by, bx])]
            for dx, dy in cands + own:
                sx, sy = int(round(x - dx)), int(round(y - dy))
                x0, y0 = max(0, sx - R), max(0, sy - R)
                x1, y1 = min(w, sx + B + R), min(h, sy + B + R)
                if x1 - x0 < B or y1 - y0 < B:
                    continue
                r = cv2.matchTemplate(a.gray[y0:y1, x0:x1], blk, cv2.TM_CCOEFF_NORMED)
                _, ncc, _, (mx, my) = cv2.minMaxLoc(r)
                if best is None or ncc > best[0]:
                    best = (ncc, x0 + mx, y0 + my)
            if best is None:
                sims.append(0.0)  # moved out of view: nothing to match it with
                continue
            ncc, ax, ay = best
            if flow is not None:
                flow[by, bx] = (x - ax, y - ay)
            # Same structure in another colour is another picture (gain-free chromaticity).
            dc = float(np.abs(b.chroma[y:y + B, x:x + B] - a.chroma[ay:ay + B, ax:ax + B]).mean())
            sims.append(ncc - cfg.chroma_weight * dc)
        if sims:
            return 1.0 - float(np.mean(sims)), 1.0 - float(np.median(sims)), shift
        return float("nan"), float("nan"), shift  # no textured block: no evidence

    # ------------------------------------------------------------------ streaming
    def push(self, i: int, rgb: np.ndarray) -> list[tuple[str, int, int]]:
        """Feed decoded frame `i` (frames must come in order from 0); returns the events now certain."""
        cfg = self.cfg
        f = self.prepare(rgb)
        self.contrast[i] = f.contrast
        events: list[tuple[str, int, int]] = []
        if self.frames:
            prev = self.frames[-1]
            f.flow = np.zeros(f.block_std.shape + (2,), np.float32)
            f.flow[:] = prev.shift
            self.d1[i], self.d1_median[i], f.shift = self.compare(prev, f, prev.shift, prev.flow, f.flow)
        if len(self.frames) >= cfg.lag:
            total = tuple(np.sum([g.shift for g in list(self.frames)[-cfg.lag + 1:]] + [f.shift], axis=0))
            self.dlag[i], _ = self.mismatch(self.frames[-cfg.lag], f, total, black_is_change=True)
        self.frames.append(f)
        self.n = i + 1
        old = i - 6 * cfg.lag  # keep only what the decisions below can still look at
        for table in (self.d1, self.d1_median, self.d2, self.dlag, self.contrast):
            table.pop(old, None)
        if len(self.cuts) > 8:
            del self.cuts[:-8]
        # Hard cut at i - 1: all three comparisons across it fail. The two lag-2 comparisons are only
        # made when the first one fails (most frames need one comparison).
        j = i - 1
        step = _nz(self.d1.get(j))
        stands_out = j >= 1 and step >= cfg.cut_contrast * self._step_level(j)
        if j >= 1 and (step >= cfg.cut_threshold or (stands_out and step >= cfg.cut_low)):
            c = min(step, self._d2(j, 1.0 if j == 1 else 0.0), self._d2(i))
            weak = stands_out and c >= cfg.cut_low and _nz(self.d1_median.get(j)) >= cfg.cut_spread
            if c >= cfg.cut_threshold or weak:
                self.cuts.append(j)
                self.base.clear()  # the new shot has its own level of lag mismatch
                events.append((CUT, j, j))
        if i in self.dlag:
            events += self._gradual(i)
        return events

    def _step_level(self, j: int) -> float:
        """The shot's own step mismatch around frame `j`: the larger of the median over the `lag` frames
        before it and the step after it (known once frame j + 1 is in); inf while there is no history."""
        before = [v for k in range(j - self.cfg.lag, j) if (v := self.d1.get(k)) is not None and not np.isnan(v)]
        if len(before) < self.cfg.lag // 2:
            return float("inf")
        return max(float(np.median(before)), _nz(self.d1.get(j + 1)))

    def _d2(self, k: int, default: float = 0.0) -> float:
        """Mismatch of frame `k` against frame `k - 2` (both still held), computed once."""
        if k not in self.d2:
            pos = len(self.frames) - 1 - (self.n - 1 - k)  # index of frame k in the deque
            if pos < 2:
                return default
            a, mid, b = self.frames[pos - 2], self.frames[pos - 1], self.frames[pos]
            prior = None if mid.flow is None or b.flow is None else mid.flow + b.flow
            self.d2[k], _ = self.mismatch(a, b, None, prior)
        return _nz(self.d2[k], default)

    def finish(self) -> list[tuple[str, int, int]]:
        """Events left at the end of the video (a cut before the last frame, an open transition)."""
        events = []
        j = self.n - 1
        if j >= 1 and min(_nz(self.d1.get(j)), self._d2(j, 1.0)) >= self.cfg.cut_threshold:
            self.cuts.append(j)
            events.append((CUT, j, j))
        if self.run:
            events += self._close_run()
        return events

    def _gradual(self, i: int) -> list[tuple[str, int, int]]:
        cfg = self.cfg
        d = self.dlag[i]
        # A run starts only once the shot's own level is known (lag // 2 frames of it).
        known = len(self.base) >= cfg.lag // 2
        level = float(np.median(self.base)) if self.base else 0.0
        if not np.isnan(d) and (self.run or known) and d >= max(cfg.gradual_threshold, level + cfg.gradual_margin):
            self.run.append(i)
            return []
        if not np.isnan(d):
            self.base.append(d)
        return self._close_run() if self.run else []

    def _close_run(self) -> list[tuple[str, int, int]]:
        cfg = self.cfg
        r0, r1 = self.run[0], self.run[-1]
        self.run = []
        # A hard cut at c raises the lag mismatch over frames [c, c + lag): the cut explains the run.
        if any(r0 - 2 <= c <= r1 for c in self.cuts) or r1 - r0 + 1 < cfg.gradual_min_run:
            return []
        # A run around one sharp step (a single frame that its predecessor does not predict, while
        # the frames around it do) is a hard cut whose three-way test was not conclusive.
        steps = {k: self.d1[k] for k in range(r0 - cfg.lag, r1 + 1) if k in self.d1 and not np.isnan(self.d1[k])}
        if steps:
            k_max = max(steps, key=steps.get)
            rest = [v for k, v in steps.items() if abs(k - k_max) > 1]
            if steps[k_max] >= cfg.cut_threshold and (not rest or steps[k_max] >= cfg.cut_contrast * np.median(rest)):
                self.cuts.append(k_max)
                return [(CUT, k_max, k_max)]
        # Frame pairs (k - lag, k) straddle the transition for k in the run: its middle is about
        # lag / 2 before the run's middle; it spans at least lag frames (more for a longer run).
        mid = (r0 + r1) / 2 - cfg.lag / 2
        half = max(cfg.lag / 2, (r1 - r0 + 1 - cfg.lag / 2) / 2)
        start, end = max(0, int(np.floor(mid - half))), min(self.n, int(np.ceil(mid + half)) + 1)
        inside = [self.contrast[k] for k in range(max(start, r0 - 2 * cfg.lag), end) if k in self.contrast]
        around = [self.contrast[k] for k in (start - 2, end + 1) if k in self.contrast]
        kind = FADE if inside and around and min(inside) < 0.25 * min(around) else DISSOLVE
        if kind == DISSOLVE:
            # Mixing two shots changes every frame a little: the frames of a dissolve change more from
            # step to step than the shot before it did (a lag mismatch that is only a tracking slip
            # over a smooth pan does not). A fade shows itself by going nearly black.
            steps_in = [v for k, v in steps.items() if start <= k < end]
            before = [self.d1[k] for k in range(r0 - 4 * cfg.lag, r0 - cfg.lag)
                      if k in self.d1 and not np.isnan(self.d1[k])]
            level = float(np.median(before)) if before else 0.0
            if not steps_in or np.mean(steps_in) < max(cfg.gradual_step_min, cfg.gradual_step_ratio * level):
                return []
        return [(kind, start, end)]


def _nz(v: float | None, default: float = 0.0) -> float:
    """A mismatch with no evidence (None / nan) counts as no change."""
    return default if v is None or np.isnan(v) else v
