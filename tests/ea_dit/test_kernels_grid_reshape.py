"""Grid Reshape: the einops definition (ea_dit.grid_reshape) against a closed form, Triton kernel against the reference, autograd."""

import pytest
import torch

from ea_dit.grid_reshape import TokenGrid
from ea_dit.grid_reshape import grid_reshape as grid_reshape_reference
from ea_dit.grid_reshape import grid_unreshape as grid_unreshape_reference
from ea_dit.kernels.grid_reshape import grid_reshape_triton, grid_unreshape_triton

LAYOUTS = [(2, 3, 4, 6, 2), (1, 5, 3, 3, 1), (1, 2, 6, 3, 3), (2, 1, 2, 2, 2)]  # (batch, frames, h, w, grid)


def _coords(batch, frames, h, w):
    """x[(b f), (y x)] = (b, f, y, x), so positions can be read back from values."""
    b, f, y, x = torch.meshgrid(torch.arange(batch), torch.arange(frames), torch.arange(h), torch.arange(w),
                                indexing="ij")
    return torch.stack([b, f, y, x], dim=-1).reshape(batch * frames, h * w, 4)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_reference_matches_closed_form(layout):
    batch, frames, h, w, g = layout
    y = grid_reshape_reference(_coords(batch, frames, h, w), TokenGrid(frames, h, w), g)
    cells_w = w // g
    for s in range(y.shape[0]):
        b, cell = divmod(s, (h // g) * cells_w)
        hh, ww = divmod(cell, cells_w)
        for t in range(y.shape[1]):
            f, r = divmod(t, g * g)
            n, m = divmod(r, g)
            assert y[s, t].tolist() == [b, f, hh * g + n, ww * g + m]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_triton_matches_reference_and_round_trips(layout, dtype, rng):
    batch, frames, h, w, g = layout
    x = torch.randn(batch * frames, h * w, 3, 5, generator=rng).to(dtype)
    y = grid_reshape_triton(x, TokenGrid(frames, h, w), g)
    assert torch.equal(y, grid_reshape_reference(x, TokenGrid(frames, h, w), g))
    back = grid_unreshape_triton(y, TokenGrid(frames, h, w), g)
    assert torch.equal(back, x)
    assert torch.equal(back, grid_unreshape_reference(y, TokenGrid(frames, h, w), g))


def test_triton_reads_strided_input(rng):
    x = torch.randn(4, 8, 6, generator=rng)[:, :, ::2]  # non-contiguous channels
    torch.testing.assert_close(grid_reshape_triton(x, TokenGrid(2, 2, 4), 2), grid_reshape_reference(x, TokenGrid(2, 2, 4), 2))


def test_autograd_backward_is_the_inverse(rng):
    frames, h, w, g = 3, 4, 2, 2
    x = torch.randn(2 * frames, h * w, 7, generator=rng, requires_grad=True)
    dy = torch.randn(2 * (h // g) * (w // g), frames * g * g, 7, generator=rng)
    (got,) = torch.autograd.grad(grid_reshape_triton(x, TokenGrid(frames, h, w), g), x, dy)
    (want,) = torch.autograd.grad(grid_reshape_reference(x, TokenGrid(frames, h, w), g), x, dy)
    assert torch.equal(got, want)

    y = torch.randn(dy.shape, generator=rng, requires_grad=True)
    dx = torch.randn(x.shape, generator=rng)
    (got,) = torch.autograd.grad(grid_unreshape_triton(y, TokenGrid(frames, h, w), g), y, dx)
    (want,) = torch.autograd.grad(grid_unreshape_reference(y, TokenGrid(frames, h, w), g), y, dx)
    assert torch.equal(got, want)


def test_rejects_indivisible_grid():
    with pytest.raises(ValueError, match="divisible by 2"):
        grid_reshape_triton(torch.zeros(2, 15), TokenGrid(1, 3, 5), 2)
