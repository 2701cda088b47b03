"""Grid Reshape (EasyAnimate V1), the token grid it works on, and the reference temporal attention.

This module is the one definition of these concepts, in plain PyTorch (no Triton): the model uses it
directly, and the Triton kernels (`ea_dit.kernels`) cite it and are tested against it.

The DiT's tokens of B videos of F frames sit in the spatial layout `(B*F, height*width, ...)`, each
frame row-major. Their token grid is a :class:`TokenGrid` `(num_frames, height, width)`.

Grid Reshape makes the motion module's temporal attention see every frame of a `g x g` spatial cell
instead of a single token. Each temporal sequence is the `F*g*g` tokens of one cell, ordered
`(f, n, m)`:

    (b f) (h n w m) c -> (b h w) (f n m) c        with n = m = g

So sequence `s = (b, hh, ww)`, position `t = (f, n, m)` is the token at frame `b*F + f`, spatial index
`(hh*g + n)*width + ww*g + m`. :func:`grid_reshape` gathers the sequences, :func:`grid_unreshape`
scatters them back; `g = 1` is plain per-token temporal attention.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from einops import rearrange

__all__ = ["TokenGrid", "check_grid", "check_tokens", "grid_reshape", "grid_unreshape", "temporal_attention_reference"]


class TokenGrid(NamedTuple):
    """The token grid of a batch of videos: `num_frames` frames of `height x width` tokens each."""

    num_frames: int
    height: int
    width: int

    @property
    def tokens_per_frame(self) -> int:
        return self.height * self.width

    def num_cells(self, grid: int) -> int:
        """Grid Reshape cells (temporal sequences) per video: `(height/g) * (width/g)`."""
        return (self.height // grid) * (self.width // grid)


def check_grid(tokens: TokenGrid, grid: int, what: str) -> None:
    """Raise ValueError unless the token grid has frames and splits into Grid Reshape cells of g x g."""
    f, h, w = tokens
    if grid < 1:
        raise ValueError(f"{what}: Grid Reshape cell size must be >= 1, got grid={grid}")
    if f < 1:
        raise ValueError(f"{what}: num_frames must be >= 1, got {f}")
    if h % grid or w % grid:
        raise ValueError(f"{what}: Grid Reshape with grid={grid} needs height and width divisible by {grid}; got a "
                         f"{h}x{w} token grid")


def check_tokens(x: torch.Tensor, tokens: TokenGrid, grid: int, what: str) -> None:
    """Raise ValueError unless `x` is `(B*num_frames, height*width, ...)` and the grid splits into g x g cells.

    Called by the public entry points (`MotionModule.forward`, the functional attention and kernels);
    inner layers only assert.
    """
    f, h, w = tokens
    if x.dim() < 2:
        raise ValueError(f"{what} has shape {tuple(x.shape)}; expected (batch*frames, height*width, ...)")
    if f >= 1 and x.shape[0] % f:
        raise ValueError(f"{what} has {x.shape[0]} rows in dim 0, not a multiple of num_frames={f}")
    if x.shape[1] != h * w:
        raise ValueError(f"{what} has {x.shape[1]} tokens per frame, but height*width = {h}*{w} = {h * w}")
    check_grid(tokens, grid, what)


def grid_reshape(x: torch.Tensor, tokens: TokenGrid, grid: int = 2) -> torch.Tensor:
    """Gather the temporal sequences: `(b f) (h n w m) ... -> (b h w) (f n m) ...` (a copy).

    Args:
        x: (B*F, height*width, *C) tokens in the spatial layout, any trailing dims.
        tokens: the token grid (F, height, width); height and width divisible by `grid`.
        grid: the cell size g.

    Returns:
        (B*(height/g)*(width/g), F*g*g, *C).
    """
    f, h, w = tokens
    return rearrange(x, "(b f) (h n w m) ... -> (b h w) (f n m) ...", f=f, h=h // grid, n=grid, w=w // grid, m=grid)


def grid_unreshape(y: torch.Tensor, tokens: TokenGrid, grid: int = 2) -> torch.Tensor:
    """Inverse of :func:`grid_reshape`: `(b h w) (f n m) ... -> (b f) (h n w m) ...` (a copy).

    Args:
        y: (B*(height/g)*(width/g), F*g*g, *C).

    Returns:
        (B*F, height*width, *C).
    """
    f, h, w = tokens
    return rearrange(y, "(b h w) (f n m) ... -> (b f) (h n w m) ...", f=f, h=h // grid, n=grid, w=w // grid, m=grid)


def temporal_attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, tokens: TokenGrid,
                                 grid: int = 2) -> torch.Tensor:
    """Temporal self-attention over Grid Reshape sequences, in fp32: the oracle of every backend.

    Args:
        q, k, v: (B*F, height*width, H, D) in the spatial token layout.
        tokens: the token grid (F, height, width).
        grid: the cell size g.

    Returns:
        (B*F, height*width, H, D) in q's dtype, softmax scale 1/sqrt(D).
    """
    qs, ks, vs = (grid_reshape(t, tokens, grid).float() for t in (q, k, v))
    scores = torch.einsum("sqhd,skhd->shqk", qs, ks) / math.sqrt(q.shape[-1])
    out = torch.einsum("shqk,skhd->sqhd", scores.softmax(dim=-1), vs)
    return grid_unreshape(out, tokens, grid).to(q.dtype)
