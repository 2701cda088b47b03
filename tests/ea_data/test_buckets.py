"""Aspect-ratio tables, nearest-bucket assignment and token-length frames / batch sizes."""

import math

import numpy as np
import pytest

from ea_data.buckets import (
    aspect_ratio_buckets,
    nearest_bucket,
    num_tokens,
    resolution_for,
    round_down_frames,
    token_batch_size,
    token_length_frames,
)

# The keys of the reference's ASPECT_RATIO_512 (height / width, two decimals).
REFERENCE_RATIOS = [
    0.25, 0.26, 0.27, 0.28, 0.32, 0.33, 0.35, 0.4, 0.42, 0.48, 0.5, 0.52, 0.57, 0.6, 0.68, 0.72, 0.78, 0.82,
    0.88, 0.94, 1.0, 1.07, 1.13, 1.21, 1.29, 1.38, 1.46, 1.67, 1.75, 2.0, 2.09, 2.4, 2.5, 2.89, 3.0, 3.11,
    3.62, 3.75, 3.88, 4.0,
]


def test_table_512_matches_reference_ratios_and_sizes():
    table = aspect_ratio_buckets(512)
    assert len(table) == 40
    assert [round(h / w, 2) for h, w in table] == REFERENCE_RATIOS
    for h, w in table:
        assert h % 32 == 0 and w % 32 == 0
        assert 256 <= h <= 1024 and 256 <= w <= 1024
        # every bucket holds 90-100 % of 512 x 512 pixels
        assert 0.9 * 512**2 <= h * w <= 512**2
    assert (512, 512) in table and (384, 672) in table and (672, 384) in table


@pytest.mark.parametrize("base", [256, 768, 1024])
def test_table_scales_with_base_size(base):
    table = aspect_ratio_buckets(base)
    assert len(table) == 40
    assert [round(h / w, 2) for h, w in table] == REFERENCE_RATIOS
    for h, w in table:
        assert h % 16 == 0 and w % 16 == 0
        assert 0.9 * base**2 <= h * w <= base**2


def test_small_base_keeps_multiples_and_merges_duplicates():
    table = aspect_ratio_buckets(64, multiple=16)
    assert len(table) == len(set(table)) < 40
    assert all(h % 16 == 0 and w % 16 == 0 for h, w in table)
    assert (64, 64) in table
    ratios = [h / w for h, w in table]
    assert ratios == sorted(ratios)
    with pytest.raises(ValueError, match="base_size"):
        aspect_ratio_buckets(8, multiple=16)


def test_nearest_bucket_is_nearest_in_log_ratio():
    table = aspect_ratio_buckets(512)
    assert nearest_bucket(1080, 1920, table) == (384, 672)  # 16:9 landscape -> 0.57
    assert nearest_bucket(1920, 1080, table) == (672, 384)  # portrait -> 1.75
    assert nearest_bucket(480, 640, table) == (448, 576)  # 4:3 -> 0.78
    assert nearest_bucket(100, 100, table) == (512, 512)
    assert nearest_bucket(10, 1000, table) == (256, 1024)  # beyond the table: the extreme bucket
    rng = np.random.default_rng(0)
    for _ in range(300):
        h, w = (int(v) for v in rng.integers(16, 4000, size=2))
        got = nearest_bucket(h, w, table)
        dist = [abs(math.log((bh / bw) / (h / w))) for bh, bw in table]
        assert abs(math.log((got[0] / got[1]) / (h / w))) == pytest.approx(min(dist))
    with pytest.raises(ValueError, match="positive"):
        nearest_bucket(0, 10, table)


def test_round_down_frames():
    assert [round_down_frames(n) for n in (0, 1, 4, 5, 8, 9, 12.9, 13, 49, 50)] == [0, 1, 1, 5, 5, 9, 9, 13, 49, 49]


def test_token_length_frames_reference_values():
    budget = 49 * 512 * 512
    assert token_length_frames(512, budget) == 49
    assert token_length_frames(768, budget) == 21
    assert token_length_frames(1024, budget) == 9
    assert token_length_frames(256, budget) == 49  # capped by max_frames
    assert token_length_frames(256, budget, max_frames=25) == 25
    assert token_length_frames(4096, budget) == 1
    for size in (256, 384, 512, 640, 768, 896, 1024):
        f = token_length_frames(size, budget)
        assert (f - 1) % 4 == 0 and f * size**2 <= budget
        assert min(f + 4, 53) * size**2 > budget or f == 49  # the next 1 + 4k would not fit


def test_token_batch_size_keeps_tokens_per_batch():
    budget, batch = 49 * 512 * 512, 4
    target = batch * num_tokens(49, 512, 512)
    assert num_tokens(49, 512, 512) == 49 * 64 * 64 // 4
    for size in (256, 512, 768, 1024):
        for h, w in aspect_ratio_buckets(size)[::7]:
            f = token_length_frames(size, budget)
            bs = token_batch_size(f, h, w, batch, budget)
            tokens = bs * num_tokens(f, h, w)
            assert tokens <= target * 1.001
            assert (bs + 1) * num_tokens(f, h, w) > target * 0.999  # floor: one more would exceed
    assert token_batch_size(49, 512, 512, batch, budget) == batch
    assert token_batch_size(1, 512, 512, batch, budget, max_batch_size=32) == 32
    assert token_batch_size(49, 2048, 2048, batch, budget) == 1


def test_resolution_for():
    res = (256, 512, 768, 1024)
    assert resolution_for(1080, 1920, res) == 1024
    assert resolution_for(480, 640, res) == 512
    assert resolution_for(600, 800, res) == 512  # 768^2 > 600 x 800: would upscale
    assert resolution_for(100, 100, res) == 256  # everything upscales: the smallest
