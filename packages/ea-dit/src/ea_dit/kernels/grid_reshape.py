"""Grid Reshape as a standalone Triton kernel (and its inverse), with autograd and a PyTorch reference.

Grid Reshape (EasyAnimate V1) makes the temporal attention of the motion module see every frame of a
`g x g` spatial cell instead of a single pixel:

    (b f) (h n w m) c -> (b h w) (f n m) c        with n = m = g

`grid_reshape` gathers the temporal sequences, `grid_unreshape` scatters them back; each is the other's
backward. The fused temporal-attention kernel does not need them (it folds the same index map into its
pointer arithmetic); they serve models that want the reshaped tokens themselves.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from einops import rearrange

from ea_dit.kernels._common import check_triton_device, interpreting, next_pow2

__all__ = ["grid_reshape_reference", "grid_unreshape_reference", "grid_reshape_triton", "grid_unreshape_triton"]


def grid_reshape_reference(x: torch.Tensor, num_frames: int, height: int, width: int, grid: int) -> torch.Tensor:
    """(B*F, height*width, *C) -> (B*(height/g)*(width/g), F*g*g, *C) with einops (a copy)."""
    return rearrange(x, "(b f) (h n w m) ... -> (b h w) (f n m) ...", f=num_frames, h=height // grid, n=grid,
                     w=width // grid, m=grid)


def grid_unreshape_reference(y: torch.Tensor, num_frames: int, height: int, width: int, grid: int) -> torch.Tensor:
    """(B*(height/g)*(width/g), F*g*g, *C) -> (B*F, height*width, *C) with einops (a copy)."""
    return rearrange(y, "(b h w) (f n m) ... -> (b f) (h n w m) ...", f=num_frames, h=height // grid, n=grid,
                     w=width // grid, m=grid)


@triton.jit
def _grid_reshape_kernel(
    x_ptr, y_ptr,                      # x: (B*F, N, C) spatial layout; y: (S, T, C) contiguous sequences
    stride_x0, stride_x1, stride_x2,
    num_rows, C,                       # num_rows = S*T
    F, WIDTH, CELLS_H, CELLS_W,
    G: tl.constexpr, INVERSE: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)  # flat (sequence, position) rows of y
    cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    T = F * G * G
    s = rows // T
    t = rows % T
    # sequence s = (b, hh, ww), position t = (f, n, m)
    b = s // (CELLS_H * CELLS_W)
    hh = (s // CELLS_W) % CELLS_H
    ww = s % CELLS_W
    f = t // (G * G)
    n = (t // G) % G
    m = t % G
    x_row = (b * F + f).to(tl.int64) * stride_x0 + ((hh * G + n) * WIDTH + ww * G + m).to(tl.int64) * stride_x1
    x_offs = x_row[:, None] + cols[None, :].to(tl.int64) * stride_x2
    y_offs = rows[:, None].to(tl.int64) * C + cols[None, :]
    mask = (rows[:, None] < num_rows) & (cols[None, :] < C)
    if INVERSE:
        tl.store(x_ptr + x_offs, tl.load(y_ptr + y_offs, mask=mask), mask=mask)
    else:
        tl.store(y_ptr + y_offs, tl.load(x_ptr + x_offs, mask=mask), mask=mask)


def _launch(x3: torch.Tensor, y3: torch.Tensor, num_frames: int, width: int, cells_h: int, cells_w: int,
            grid: int, inverse: bool) -> None:
    """Copy between x3 (B*F, N, C) and y3 (S, T, C) (y3 contiguous); direction given by `inverse`."""
    num_rows = y3.shape[0] * y3.shape[1]
    c = y3.shape[2]
    if num_rows == 0 or c == 0:
        return
    block_c = min(next_pow2(c), 32 if interpreting() else 128)
    block_r = 16 if interpreting() else max(1, 4096 // block_c)
    launch_grid = (triton.cdiv(num_rows, block_r), triton.cdiv(c, block_c))
    _grid_reshape_kernel[launch_grid](
        x3, y3, x3.stride(0), x3.stride(1), x3.stride(2), num_rows, c, num_frames, width, cells_h, cells_w,
        G=grid, INVERSE=inverse, BLOCK_R=block_r, BLOCK_C=block_c, num_warps=4,
    )


def _reshape_fwd(x, num_frames, height, width, grid):
    bf, n = x.shape[:2]
    trailing = x.shape[2:]
    x3 = x.reshape(bf, n, -1)  # a view when the trailing dims are contiguous
    cells_h, cells_w = height // grid, width // grid
    s = bf // num_frames * cells_h * cells_w
    y3 = torch.empty(s, num_frames * grid * grid, x3.shape[2], dtype=x.dtype, device=x.device)
    _launch(x3, y3, num_frames, width, cells_h, cells_w, grid, inverse=False)
    return y3.reshape(s, num_frames * grid * grid, *trailing)


def _unreshape_fwd(y, num_frames, height, width, grid):
    s, t = y.shape[:2]
    trailing = y.shape[2:]
    y3 = y.reshape(s, t, -1).contiguous()
    cells_h, cells_w = height // grid, width // grid
    bf = s // (cells_h * cells_w) * num_frames
    x3 = torch.empty(bf, height * width, y3.shape[2], dtype=y.dtype, device=y.device)
    _launch(x3, y3, num_frames, width, cells_h, cells_w, grid, inverse=True)
    return x3.reshape(bf, height * width, *trailing)


class _GridReshape(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, num_frames, height, width, grid):
        ctx.layout = (num_frames, height, width, grid)
        return _reshape_fwd(x, num_frames, height, width, grid)

    @staticmethod
    def backward(ctx, dy):
        return _unreshape_fwd(dy, *ctx.layout), None, None, None, None


class _GridUnreshape(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y, num_frames, height, width, grid):
        ctx.layout = (num_frames, height, width, grid)
        return _unreshape_fwd(y, num_frames, height, width, grid)

    @staticmethod
    def backward(ctx, dx):
        return _reshape_fwd(dx, *ctx.layout), None, None, None, None


def _check(x: torch.Tensor, what: str, height: int, width: int, grid: int) -> None:
    check_triton_device(x, what)
    if grid < 1 or height % grid or width % grid:
        raise ValueError(f"{what}: Grid Reshape with grid={grid} needs height and width divisible by {grid}; "
                         f"got a {height}x{width} token grid")


def grid_reshape_triton(x: torch.Tensor, num_frames: int, height: int, width: int, grid: int = 2) -> torch.Tensor:
    """Triton Grid Reshape: (B*F, height*width, *C) -> (B*(height/g)*(width/g), F*g*g, *C), differentiable."""
    _check(x, "grid_reshape_triton", height, width, grid)
    if x.dim() < 2 or x.shape[0] % num_frames or x.shape[1] != height * width:
        raise ValueError(f"grid_reshape_triton: input has shape {tuple(x.shape)}; expected (batch*{num_frames} "
                         f"frames, {height}*{width} tokens, ...)")
    return _GridReshape.apply(x, num_frames, height, width, grid)


def grid_unreshape_triton(y: torch.Tensor, num_frames: int, height: int, width: int, grid: int = 2) -> torch.Tensor:
    """Triton inverse Grid Reshape: (B*(height/g)*(width/g), F*g*g, *C) -> (B*F, height*width, *C)."""
    _check(y, "grid_unreshape_triton", height, width, grid)
    cells = (height // grid) * (width // grid)
    if y.dim() < 2 or y.shape[0] % cells or y.shape[1] != num_frames * grid * grid:
        raise ValueError(f"grid_unreshape_triton: input has shape {tuple(y.shape)}; expected (batch*{cells} "
                         f"cells, {num_frames * grid * grid}, ...)")
    return _GridUnreshape.apply(y, num_frames, height, width, grid)
