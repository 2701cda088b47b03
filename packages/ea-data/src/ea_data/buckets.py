"""Aspect-ratio and token-length buckets for batching videos and images of different shapes.

A batch must hold tensors of one shape, so every sample is assigned to a bucket
`(kind, height, width, frames)` and batches are drawn from one bucket at a time (the reference's
`bucket_sampler.py`). Two strategies:

- **aspect ratio**: the 40 aspect ratios of the reference's `ASPECT_RATIO_512` table (height / width
  from 0.25 to 4, every bucket covering 90-100 % of `base x base` pixels), generalised to any base
  size; the batch size is fixed per kind (video / image).
- **token length**: for a per-sample budget of `frames x height x width` pixels (e.g. 49 x 512 x 512)
  each resolution gets `frames = min(budget / size^2, max_frames)` rounded down to `1 + 4k`
  (512 -> 49, 768 -> 21, 1024 -> 9), and the batch size is scaled so each batch holds about the same
  number of DiT tokens `frames x height x width / (8 x 8 x patch^2)`.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import NamedTuple

#: The reference's 40 buckets at base 512 as `(height, width)` in units of `base / 16` (32 px at 512),
#: ordered by height / width from 0.25 to 4. The reference table is not quite symmetric: it has
#: 352x672 (0.52) but not its transpose 672x352 (1.91); we keep its 40 entries as they are.
_GRID_UNITS = 16
_GRID = (
    (8, 32), (8, 31), (8, 30), (8, 29), (9, 28), (9, 27), (9, 26), (10, 25), (10, 24), (11, 23),
    (11, 22), (11, 21), (12, 21), (12, 20), (13, 19), (13, 18), (14, 18), (14, 17), (15, 17), (15, 16),
    (16, 16), (16, 15), (17, 15), (17, 14), (18, 14), (18, 13), (19, 13), (20, 12), (21, 12), (22, 11),
    (23, 11), (24, 10), (25, 10), (26, 9), (27, 9), (28, 9), (29, 8), (30, 8), (31, 8), (32, 8),
)

#: Default per-sample budget of token-length training: 49 frames at 512 x 512.
DEFAULT_TOKEN_BUDGET = 49 * 512 * 512
#: Default base sizes of token-length training (each sample gets the largest that does not upscale it).
TOKEN_LENGTH_RESOLUTIONS = (256, 512, 768, 1024)


class BucketKey(NamedTuple):
    """One batch shape: `kind` is "video" or "image"; the batch tensor is `(B, 3, frames, height, width)`."""

    kind: str
    height: int
    width: int
    frames: int


def _round_to(x: float, multiple: int) -> int:
    return max(multiple, int(math.floor(x / multiple + 0.5)) * multiple)


@lru_cache(maxsize=64)
def aspect_ratio_buckets(base_size: int = 512, multiple: int = 16) -> tuple[tuple[int, int], ...]:
    """The reference's 40 aspect-ratio buckets scaled to `base_size`, as `(height, width)` pairs.

    Sides are rounded to a multiple of `multiple` (16 = VAE stride 8 x patch 2, so every bucket
    patchifies exactly). At base 512 the table equals the reference's `ASPECT_RATIO_512` (all sides
    multiples of 32); at small bases rounding can merge neighbours, so fewer than 40 remain.
    Sorted by height / width, ascending.
    """
    if base_size < multiple or multiple < 1:
        raise ValueError(f"base_size must be >= multiple >= 1, got base_size={base_size}, multiple={multiple}")
    unit = base_size / _GRID_UNITS
    sizes = {(_round_to(h * unit, multiple), _round_to(w * unit, multiple)) for h, w in _GRID}
    return tuple(sorted(sizes, key=lambda hw: (hw[0] / hw[1], hw[0])))


def nearest_bucket(height: int, width: int, buckets: tuple[tuple[int, int], ...]) -> tuple[int, int]:
    """The bucket `(h, w)` whose aspect ratio is nearest to `height / width` (in log ratio, so portrait
    and landscape are treated alike); ties go to the bucket with the smaller ratio."""
    if height <= 0 or width <= 0:
        raise ValueError(f"size must be positive, got {width}x{height}")
    if not buckets:
        raise ValueError("no buckets to choose from")
    target = math.log(height / width)
    return min(buckets, key=lambda hw: abs(math.log(hw[0] / hw[1]) - target))


def round_down_frames(n: float) -> int:
    """The largest `1 + 4k` not above `n` (the Slice VAE's frame counts); 0 when `n < 1`."""
    if n < 1:
        return 0
    return (int(math.floor(n)) - 1) // 4 * 4 + 1


def token_length_frames(size: int, budget: int = DEFAULT_TOKEN_BUDGET, max_frames: int = 49) -> int:
    """Frames for a `size x size` sample under a budget of `frames x height x width` pixels:
    `min(budget / size^2, max_frames)` rounded down to `1 + 4k` (49 x 512^2: 512 -> 49, 768 -> 21,
    1024 -> 9). At least 1 (an image-sized sample) when the budget is smaller than one frame."""
    if size <= 0 or budget <= 0 or max_frames < 1:
        raise ValueError(f"size, budget and max_frames must be positive, got {size}, {budget}, {max_frames}")
    return max(1, round_down_frames(min(budget / size**2, max_frames)))


def num_tokens(frames: int, height: int, width: int, patch_size: int = 2, spatial_compression: int = 8) -> int:
    """DiT sequence length of one sample, `frames x height x width / (8 x 8 x patch^2)`."""
    return frames * height * width // (spatial_compression**2 * patch_size**2)


def token_batch_size(frames: int, height: int, width: int, batch_size: int,
                     budget: int = DEFAULT_TOKEN_BUDGET, max_batch_size: int | None = None) -> int:
    """Batch size for a `frames x height x width` bucket so the batch holds about as many tokens as
    `batch_size` samples of the full `budget` (floor, at least 1, at most `max_batch_size`)."""
    if min(frames, height, width, batch_size, budget) <= 0:
        raise ValueError(f"frames, height, width, batch_size, budget must be positive, got "
                         f"{frames}, {height}, {width}, {batch_size}, {budget}")
    bs = max(1, int(batch_size * budget // (frames * height * width)))
    return bs if max_batch_size is None else min(bs, max_batch_size)


def resolution_for(height: int, width: int, resolutions: tuple[int, ...]) -> int:
    """The largest base size in `resolutions` that does not upscale a `width x height` sample (compared
    by area, `base^2 <= height x width`); the smallest base when every one would upscale."""
    if not resolutions:
        raise ValueError("resolutions is empty")
    fitting = [r for r in resolutions if r * r <= height * width]
    return max(fitting) if fitting else min(resolutions)
