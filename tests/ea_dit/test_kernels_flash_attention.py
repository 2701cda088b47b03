"""Triton flash attention with a key-padding mask (the generic "triton" backend) vs the reference."""

import pytest
import torch

from ea_dit.attention import attention_reference
from ea_dit.kernels.flash_attention import flash_attention

# (batch, query tokens, key tokens, heads, head_dim)
SHAPES = [
    (2, 7, 19, 2, 16),   # cross-attention, odd lengths, two key tiles
    (1, 33, 33, 1, 32),  # self-attention, three query tiles
    (3, 5, 1, 1, 24),    # a single key, padded head dim
]
TOLERANCES = {torch.float32: (2e-5, 2e-5), torch.float16: (3e-3, 1e-2), torch.bfloat16: (2e-2, 6e-2)}


def _make(shape, dtype, gen):
    b, lq, lk, h, d = shape
    q = torch.randn(b, lq, h, d, generator=gen).to(dtype).requires_grad_()
    k = torch.randn(b, lk, h, d, generator=gen).to(dtype).requires_grad_()
    v = torch.randn(b, lk, h, d, generator=gen).to(dtype).requires_grad_()
    return q, k, v


def _check(q, k, v, mask, dtype, gen):
    out = flash_attention(q, k, v, mask)
    ref = attention_reference(q, k, v, mask)
    fwd_tol, bwd_tol = TOLERANCES[dtype]
    torch.testing.assert_close(out.float(), ref.float(), atol=fwd_tol, rtol=fwd_tol)
    dout = torch.randn(out.shape, generator=gen).to(dtype)
    got = torch.autograd.grad(out, (q, k, v), dout)
    want = torch.autograd.grad(ref, (q, k, v), dout)
    for name, a, b in zip("qkv", got, want, strict=True):
        assert torch.isfinite(a).all(), name
        torch.testing.assert_close(a.float(), b.float(), atol=bwd_tol, rtol=bwd_tol, msg=f"d{name}")
    return out, got


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "b{}q{}k{}H{}D{}".format(*s))
def test_matches_reference(shape, masked, dtype, rng):
    q, k, v = _make(shape, dtype, rng)
    mask = None
    if masked:
        mask = torch.rand(shape[0], shape[2], generator=rng) > 0.4
        mask[:, 0] = True
    _check(q, k, v, mask, dtype, rng)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_fully_padded_entry_gives_zeros_not_nan(dtype, rng):
    q, k, v = _make((3, 6, 20, 2, 16), dtype, rng)
    mask = torch.ones(3, 20, dtype=torch.bool)
    mask[1] = False           # no text token at all
    mask[2, 17:] = False      # padding inside the last key tile
    out, (dq, dk, dv) = _check(q, k, v, mask, dtype, rng)
    assert out[1].abs().max() == 0
    assert dq[1].abs().max() == 0 and dk[1].abs().max() == 0 and dv[1].abs().max() == 0
    assert dk[2, 17:].abs().max() == 0 and dv[2, 17:].abs().max() == 0


def test_masked_keys_do_not_influence_output(rng):
    q, k, v = _make((1, 5, 12, 1, 16), torch.float32, rng)
    mask = torch.ones(1, 12, dtype=torch.bool)
    mask[0, 3:7] = False
    out = flash_attention(q, k, v, mask)
    v2 = v.detach().clone()
    v2[0, 3:7] = 1e4
    out2 = flash_attention(q, k, v2, mask)
    torch.testing.assert_close(out, out2)


def test_rejects_mismatched_shapes(rng):
    q, k, v = _make((2, 4, 6, 1, 16), torch.float32, rng)
    with pytest.raises(ValueError, match="key_mask has shape"):
        flash_attention(q, k, v, torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="expected q"):
        flash_attention(q, k[:, :, :, :8], v)
