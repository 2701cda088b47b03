"""Fused Triton temporal attention (Grid Reshape folded in) against the PyTorch reference.

On a CPU these run under TRITON_INTERPRET=1 (set by tests/conftest.py), so shapes stay tiny.
"""

import pytest
import torch

from ea_dit.grid_reshape import TokenGrid, temporal_attention_reference
from ea_dit.kernels.temporal_attention import temporal_attention_triton

# (batch, frames, height, width, grid, heads, head_dim): odd frame counts, grid 1 and 2, a sequence
# length that is not a multiple of the 16-wide tiles, padded head dims (24 -> 32), several tiles.
SHAPES = [
    (1, 3, 2, 4, 2, 2, 16),   # T = 12: one partial tile
    (2, 5, 3, 3, 1, 1, 24),   # grid 1, T = 5, head dim padded
    (1, 9, 2, 2, 2, 1, 16),   # T = 36: three tiles, last partial
    (1, 1, 4, 2, 2, 2, 32),   # a single frame: the cell's 4 tokens attend to each other
    (2, 16, 2, 2, 1, 1, 16),  # T = 16 exactly one tile, two batch entries
]
TOLERANCES = {torch.float32: (2e-5, 2e-5), torch.float16: (3e-3, 1e-2), torch.bfloat16: (2e-2, 6e-2)}


def _inputs(shape, dtype, gen):
    b, f, h, w, _, heads, d = shape
    return [torch.randn(b * f, h * w, heads, d, generator=gen).to(dtype).requires_grad_() for _ in range(3)]


def _grads(out, inputs, dout):
    return torch.autograd.grad(out, inputs, dout)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "b{}f{}h{}w{}g{}H{}D{}".format(*s))
def test_forward_and_gradients_match_reference(shape, dtype, rng):
    _, f, h, w, g, _, _ = shape
    q, k, v = _inputs(shape, dtype, rng)
    dout = torch.randn(q.shape, generator=rng).to(dtype)

    out = temporal_attention_triton(q, k, v, TokenGrid(f, h, w), g)
    ref = temporal_attention_reference(q, k, v, TokenGrid(f, h, w), g)
    fwd_tol, bwd_tol = TOLERANCES[dtype]
    assert out.shape == q.shape and out.dtype == dtype
    torch.testing.assert_close(out.float(), ref.float(), atol=fwd_tol, rtol=fwd_tol)

    for name, got, want in zip("qkv", _grads(out, (q, k, v), dout), _grads(ref, (q, k, v), dout), strict=True):
        assert got.dtype == dtype, name
        torch.testing.assert_close(got.float(), want.float(), atol=bwd_tol, rtol=bwd_tol, msg=f"d{name}")


def test_reads_strided_views_of_a_packed_projection(rng):
    """q, k, v as slices of one (B*F, N, 3, H, D) projection, and a non-contiguous dout."""
    f, h, w, g, heads, d = 4, 2, 4, 2, 2, 16
    qkv = torch.randn(2 * f, h * w, 3, heads, d, generator=rng, requires_grad=True)
    q, k, v = qkv.unbind(dim=2)
    assert not q.is_contiguous()
    dout = torch.randn(2 * f, h * w, d, heads, generator=rng).transpose(2, 3)

    out = temporal_attention_triton(q, k, v, TokenGrid(f, h, w), g)
    (grad,) = torch.autograd.grad(out, qkv, dout)
    ref = temporal_attention_reference(q, k, v, TokenGrid(f, h, w), g)
    (ref_grad,) = torch.autograd.grad(ref, qkv, dout)
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=2e-5)
    torch.testing.assert_close(grad, ref_grad, atol=2e-5, rtol=2e-5)


def test_grid_reshape_semantics_tokens_of_a_cell_attend_across_frames(rng):
    """Closed form: with identical keys every query averages the values of its sequence, i.e. of its
    g x g cell over all frames - and of nothing outside the cell."""
    f, h, w, g = 3, 4, 2, 2
    q = torch.randn(f, h * w, 1, 16, generator=rng)
    k = torch.zeros_like(q)
    v = torch.randn(f, h * w, 1, 16, generator=rng)
    out = temporal_attention_triton(q, k, v, TokenGrid(f, h, w), g)
    v_grid = v.reshape(f, h // g, g, w // g, g, 1, 16)
    cell_mean = v_grid.mean(dim=(0, 2, 4), keepdim=True).expand_as(v_grid).reshape(v.shape)
    torch.testing.assert_close(out, cell_mean, atol=1e-5, rtol=1e-5)


def test_does_not_call_the_rearranging_reference(monkeypatch, rng):
    """The kernel path must not fall back to Grid Reshape copies."""
    import ea_dit.kernels.temporal_attention as module

    def forbidden(*args, **kwargs):
        raise AssertionError("Triton path made a Grid Reshape copy")

    import ea_dit.grid_reshape as definition

    monkeypatch.setattr(definition, "grid_reshape", forbidden)
    monkeypatch.setattr(definition, "grid_unreshape", forbidden)
    assert not hasattr(module, "grid_reshape") and not hasattr(module, "grid_unreshape")
    q = torch.randn(2, 4, 1, 16, generator=rng)
    assert temporal_attention_triton(q, q, q, TokenGrid(2, 2, 2), 2).shape == q.shape


def test_rejects_bad_layouts(rng):
    q = torch.randn(6, 12, 2, 16, generator=rng)
    with pytest.raises(ValueError, match="divisible by 2"):
        temporal_attention_triton(q, q, q, TokenGrid(3, 3, 4), 2)
    with pytest.raises(ValueError, match="not a multiple of num_frames=4"):
        temporal_attention_triton(q, q, q, TokenGrid(4, 3, 4), 1)
    with pytest.raises(TypeError, match="dtypes"):
        temporal_attention_triton(q, q, q.double(), TokenGrid(3, 3, 4), 1)
