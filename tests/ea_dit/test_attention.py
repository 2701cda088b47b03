"""Public attention entry points: backends agree with the fp32 reference, masks, checks, errors."""

import importlib.util

import pytest
import torch

from ea_dit.attention import attention, attention_reference, temporal_attention
from ea_dit.grid_reshape import TokenGrid, grid_reshape, grid_unreshape, temporal_attention_reference


def _qkv(b, lq, lk, h, d, gen, dtype=torch.float32):
    return (torch.randn(b, lq, h, d, generator=gen, dtype=dtype).requires_grad_(),
            torch.randn(b, lk, h, d, generator=gen, dtype=dtype).requires_grad_(),
            torch.randn(b, lk, h, d, generator=gen, dtype=dtype).requires_grad_())


@pytest.mark.parametrize("backend", ["sdpa", "triton"])
def test_attention_with_mask_matches_reference(backend, rng):
    q, k, v = _qkv(3, 9, 11, 2, 16, rng)
    mask = torch.rand(3, 11, generator=rng) > 0.5
    mask[0] = True
    mask[2] = False  # an entry with no text tokens: zeros, finite gradients
    out = attention(q, k, v, key_mask=mask, backend=backend)
    ref = attention_reference(q, k, v, mask)
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=2e-5)
    assert out[2].abs().max() == 0
    dout = torch.randn(out.shape, generator=rng)
    for a, b in zip(torch.autograd.grad(out, (q, k, v), dout), torch.autograd.grad(ref, (q, k, v), dout),
                    strict=True):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("backend", ["sdpa", "triton"])
@pytest.mark.parametrize("grid", [1, 2])
def test_temporal_attention_matches_reference(backend, grid, rng):
    frames, h, w = 3, 2, 4
    q, k, v = (torch.randn(2 * frames, h * w, 2, 16, generator=rng, requires_grad=True) for _ in range(3))
    out = temporal_attention(q, k, v, TokenGrid(frames, h, w), grid=grid, backend=backend)
    ref = temporal_attention_reference(q, k, v, TokenGrid(frames, h, w), grid)
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=2e-5)
    dout = torch.randn(out.shape, generator=rng)
    for a, b in zip(torch.autograd.grad(out, (q, k, v), dout), torch.autograd.grad(ref, (q, k, v), dout),
                    strict=True):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=2e-5)


def test_sdpa_half_precision_close_to_reference(rng):
    q, k, v = _qkv(2, 5, 7, 2, 16, rng, dtype=torch.bfloat16)
    out = attention(q, k, v, backend="sdpa")
    torch.testing.assert_close(out.float(), attention_reference(q, k, v).float(), atol=2e-2, rtol=2e-2)


def test_grid_reshape_round_trip(rng):
    x = torch.randn(2 * 3, 4 * 6, 2, 8, generator=rng)
    tokens = TokenGrid(3, 4, 6)
    y = grid_reshape(x, tokens, grid=2)
    assert y.shape == (2 * 2 * 3, 3 * 4, 2, 8)
    assert torch.equal(grid_unreshape(y, tokens, grid=2), x)
    # the first temporal sequence is the top-left 2x2 cell of frame 0, then of frame 1, ...
    assert torch.equal(y[0, :4], x[0, [0, 1, 6, 7]])
    assert torch.equal(y[0, 4:8], x[1, [0, 1, 6, 7]])


def test_errors_are_clear(rng):
    q, k, v = _qkv(2, 4, 6, 2, 16, rng)
    with pytest.raises(ValueError, match="backend 'flash' is unknown"):
        attention(q, k, v, backend="flash")
    with pytest.raises(TypeError, match="expected torch.bool"):
        attention(q, k, v, key_mask=torch.ones(2, 6))
    with pytest.raises(ValueError, match=r"expected \(batch, key_tokens\) = \(2, 6\)"):
        attention(q, k, v, key_mask=torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="must agree in batch, heads and head_dim"):
        attention(q, k[:, :, :1], v[:, :, :1])
    with pytest.raises(TypeError, match="dtypes differ"):
        attention(q, k.half(), v.half())
    with pytest.raises(ValueError, match="4 dims"):
        attention(q[0], k, v)
    x = torch.randn(6, 12, 2, 16)
    with pytest.raises(ValueError, match="divisible by 2; got a 3x4 token grid"):
        temporal_attention(x, x, x, TokenGrid(3, 3, 4), grid=2)
    with pytest.raises(ValueError, match="tokens per frame"):
        temporal_attention(x, x, x, TokenGrid(3, 2, 4), grid=2)
    with pytest.raises(ValueError, match="not a multiple of num_frames=4"):
        temporal_attention(x, x, x, TokenGrid(4, 3, 4), grid=1)


@pytest.mark.skipif(importlib.util.find_spec("xformers") is not None, reason="xformers is installed")
def test_xformers_backend_explains_how_to_install(rng):
    q, k, v = _qkv(1, 4, 4, 1, 16, rng)
    with pytest.raises(ImportError, match="uv sync --extra xformers"):
        attention(q, k, v, backend="xformers")
    with pytest.raises(ImportError, match="uv sync --extra xformers"):
        temporal_attention(q, q, q, TokenGrid(1, 2, 2), grid=2, backend="xformers")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_triton_on_gpu_matches_sdpa(dtype):
    """Realistic motion-module shape on a GPU: 16 frames, 16x16 tokens, 8 heads of 144 (padded to 256)."""
    gen = torch.Generator(device="cuda").manual_seed(0)
    frames, h, w = 16, 16, 16
    q, k, v = (torch.randn(2 * frames, h * w, 8, 144, device="cuda", dtype=dtype, generator=gen,
                           requires_grad=True) for _ in range(3))
    out = temporal_attention(q, k, v, TokenGrid(frames, h, w), grid=2, backend="triton")
    ref = temporal_attention(q, k, v, TokenGrid(frames, h, w), grid=2, backend="sdpa")
    torch.testing.assert_close(out, ref, atol=2e-2, rtol=2e-2)
    dout = torch.randn_like(out)
    for a, b in zip(torch.autograd.grad(out, (q, k, v), dout), torch.autograd.grad(ref, (q, k, v), dout),
                    strict=True):
        torch.testing.assert_close(a, b, atol=5e-2, rtol=5e-2)
    qm, km, vm = q[:, :100], k[:, :77], v[:, :77]
    mask = torch.rand(qm.shape[0], 77, device="cuda", generator=gen) > 0.3
    torch.testing.assert_close(attention(qm, km, vm, mask, backend="triton"),
                               attention(qm, km, vm, mask, backend="sdpa"), atol=2e-2, rtol=2e-2)
