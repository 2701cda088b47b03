"""Grid Reshape as a standalone Triton kernel (and its inverse), with autograd.

Grid Reshape and its index map are defined in `ea_dit.grid_reshape` (`grid_reshape`,
`grid_unreshape`: the einops definition, which is this kernel's oracle). `grid_reshape_triton`
gathers the temporal sequences with the same map, `grid_unreshape_triton` scatters them back; each is
the other's backward. The fused temporal-attention kernel does not need them (it folds the same index
map into its pointer arithmetic); they serve models that want the reshaped tokens themselves.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ea_dit.grid_reshape import TokenGrid, check_grid, check_tokens
from ea_dit.kernels._common import check_triton_device, interpreting, next_pow2

__all__ = ["grid_reshape_triton", "grid_unreshape_triton"]


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


def _reshape_fwd(x, tokens: TokenGrid, grid: int):
    bf, n = x.shape[:2]
    trailing = x.shape[2:]
    x3 = x.reshape(bf, n, -1)  # a view when the trailing dims are contiguous
    f, height, width = tokens
    cells_h, cells_w = height // grid, width // grid
    s = bf // f * cells_h * cells_w
    y3 = torch.empty(s, f * grid * grid, x3.shape[2], dtype=x.dtype, device=x.device)
    _launch(x3, y3, f, width, cells_h, cells_w, grid, inverse=False)
    return y3.reshape(s, f * grid * grid, *trailing)


def _unreshape_fwd(y, tokens: TokenGrid, grid: int):
    s, t = y.shape[:2]
    trailing = y.shape[2:]
    y3 = y.reshape(s, t, -1).contiguous()
    f, height, width = tokens
    cells_h, cells_w = height // grid, width // grid
    bf = s // (cells_h * cells_w) * f
    x3 = torch.empty(bf, height * width, y3.shape[2], dtype=y.dtype, device=y.device)
    _launch(x3, y3, f, width, cells_h, cells_w, grid, inverse=True)
    return x3.reshape(bf, height * width, *trailing)


class _GridReshape(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, tokens, grid):
        ctx.layout = (tokens, grid)
        return _reshape_fwd(x, tokens, grid)

    @staticmethod
    def backward(ctx, dy):
        return _unreshape_fwd(dy, *ctx.layout), None, None


class _GridUnreshape(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y, tokens, grid):
        ctx.layout = (tokens, grid)
        return _unreshape_fwd(y, tokens, grid)

    @staticmethod
    def backward(ctx, dx):
        return _reshape_fwd(dx, *ctx.layout), None, None


def grid_reshape_triton(x: torch.Tensor, tokens: TokenGrid, grid: int = 2) -> torch.Tensor:
    """Triton `ea_dit.grid_reshape.grid_reshape`: (B*F, height*width, *C) -> (B*cells, F*g*g, *C), differentiable."""
    check_triton_device(x, "grid_reshape_triton")
    tokens = TokenGrid(*tokens)
    check_tokens(x, tokens, grid, "grid_reshape_triton input")
    return _GridReshape.apply(x, tokens, grid)


def grid_unreshape_triton(y: torch.Tensor, tokens: TokenGrid, grid: int = 2) -> torch.Tensor:
    """Triton `ea_dit.grid_reshape.grid_unreshape`: (B*cells, F*g*g, *C) -> (B*F, height*width, *C)."""
    check_triton_device(y, "grid_unreshape_triton")
    tokens = TokenGrid(*tokens)
    check_grid(tokens, grid, "grid_unreshape_triton")
    f, cells = tokens.num_frames, tokens.num_cells(grid)
    if y.dim() < 2 or y.shape[0] % cells or y.shape[1] != f * grid * grid:
        raise ValueError(f"grid_unreshape_triton: input has shape {tuple(y.shape)}; expected (batch*{cells} cells, "
                         f"{f}*{grid}*{grid} = {f * grid * grid}, ...)")
    return _GridUnreshape.apply(y, tokens, grid)
