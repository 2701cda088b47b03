"""Spatial tiling with linear-ramp blending.

Tiles are laid out in latent units along one axis: `tile` latents long, consecutive tiles overlapping
by at least `overlap` latents, the last one flush with the end. Each tile's output is weighted by a
separable map that ramps linearly from ~0 to 1 across the overlap with each neighbour; the maps are
normalised so that the weights at every output pixel sum to exactly 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def tile_spans(length: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """`[start, stop)` spans covering `range(length)` with tiles of `tile` and overlaps >= `overlap`."""
    if tile >= length:
        return [(0, length)]
    stride = tile - overlap
    if stride < 1:
        raise ValueError(f"tile of {tile} with overlap {overlap} leaves no stride")
    spans, start = [], 0
    while start + tile < length:
        spans.append((start, start + tile))
        start += stride
    spans.append((length - tile, length))
    return spans


def ramp(n: int, ramp_len: int, rise: bool, fall: bool) -> torch.Tensor:
    """1D weights of length `n`: linear rise over the first `ramp_len` entries (if `rise`), linear fall over
    the last `ramp_len` (if `fall`), 1 elsewhere. Strictly positive, so every pixel has weight."""
    w = torch.ones(n, dtype=torch.float64)
    r = min(ramp_len, n)
    steps = torch.arange(1, r + 1, dtype=torch.float64) / (r + 1)
    if rise and r:
        w[:r] *= steps
    if fall and r:
        w[n - r :] *= steps.flip(0)
    return w


@dataclass
class Tile:
    """One spatial tile: its input region (`y`, `x` spans in input units), output region (`out_y`, `out_x`)
    and normalised blending weights `(out_h, out_w)` (None when the tile is the whole frame)."""

    y: tuple[int, int]
    x: tuple[int, int]
    out_y: tuple[int, int]
    out_x: tuple[int, int]
    weight: torch.Tensor | None


def make_tiles(lat_h: int, lat_w: int, tile: int, overlap: int, in_scale: int, out_scale: int) -> list[Tile]:
    """Tiles over a `(lat_h, lat_w)` latent grid. Input regions are latent spans times `in_scale` and
    output regions latent spans times `out_scale` (decode: 1 and 8; encode: 8 and 1); the blending ramp
    is `overlap * out_scale` output pixels long."""
    ys, xs = tile_spans(lat_h, tile, overlap), tile_spans(lat_w, tile, overlap)
    if len(ys) == 1 and len(xs) == 1:
        return [Tile((0, lat_h * in_scale), (0, lat_w * in_scale), (0, lat_h * out_scale), (0, lat_w * out_scale), None)]
    r = overlap * out_scale
    maps = []
    total = torch.zeros(lat_h * out_scale, lat_w * out_scale, dtype=torch.float64)
    for i, (y0, y1) in enumerate(ys):
        wy = ramp((y1 - y0) * out_scale, r, rise=i > 0, fall=i < len(ys) - 1)
        for j, (x0, x1) in enumerate(xs):
            wx = ramp((x1 - x0) * out_scale, r, rise=j > 0, fall=j < len(xs) - 1)
            w = wy[:, None] * wx[None, :]
            total[y0 * out_scale : y1 * out_scale, x0 * out_scale : x1 * out_scale] += w
            maps.append(((y0, y1), (x0, x1), w))
    tiles = []
    for (y0, y1), (x0, x1), w in maps:
        oy, ox = (y0 * out_scale, y1 * out_scale), (x0 * out_scale, x1 * out_scale)
        w = (w / total[oy[0] : oy[1], ox[0] : ox[1]]).float()
        tiles.append(Tile((y0 * in_scale, y1 * in_scale), (x0 * in_scale, x1 * in_scale), oy, ox, w))
    return tiles
