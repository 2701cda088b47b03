"""MotionModule: identity at insertion, and agreement with an independent plain-PyTorch reference
(einops Grid Reshape + hand-written softmax attention, as in EasyAnimate's VersatileAttention)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from ea_dit import MotionModule
from ea_dit.grid_reshape import TokenGrid


def _randomise_(module: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)  # norms, biases and proj_out too


def _reference(sd: dict, x: torch.Tensor, frames: int, height: int, width: int, heads: int, grid: int,
               groups: int) -> torch.Tensor:
    """The motion module written out from EasyAnimate's description, on (b f) (h w) c tokens."""
    c = x.shape[-1]
    # GroupNorm over each frame's channels-groups x tokens
    xf = rearrange(x, "bf (h w) c -> bf c h w", h=height)
    hidden = F.group_norm(xf, groups, sd["norm.weight"], sd["norm.bias"], eps=1e-6)
    hidden = rearrange(hidden, "bf c h w -> bf (h w) c")
    hidden = hidden @ sd["proj_in.weight"].T + sd["proj_in.bias"]
    # sinusoidal table, interleaved sin/cos, indexed by frame
    pos = torch.arange(frames, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, c, 2, dtype=torch.float32) * (-math.log(10000.0) / c))
    pe = torch.stack([torch.sin(pos * div), torch.cos(pos * div)], dim=-1).reshape(frames, c)
    for i in range(2):
        normed = F.layer_norm(hidden, (c,), sd[f"attn_norms.{i}.weight"], sd[f"attn_norms.{i}.bias"], eps=1e-5)
        # the reference adds positions in the (b d) f c layout, then Grid Reshapes
        t = rearrange(normed, "(b f) d c -> (b d) f c", f=frames) + pe
        t = rearrange(t, "(b h w) f c -> b f h w c", h=height, w=width)
        t = rearrange(t, "b f (h n) (w m) c -> (b h w) (f n m) c", n=grid, m=grid)
        q = rearrange(t @ sd[f"attns.{i}.to_q.weight"].T, "s l (h d) -> s h l d", h=heads)
        k = rearrange(t @ sd[f"attns.{i}.to_k.weight"].T, "s l (h d) -> s h l d", h=heads)
        v = rearrange(t @ sd[f"attns.{i}.to_v.weight"].T, "s l (h d) -> s h l d", h=heads)
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(c // heads), dim=-1)
        o = rearrange(weights @ v, "s h l d -> s l (h d)")
        o = o @ sd[f"attns.{i}.to_out.weight"].T + sd[f"attns.{i}.to_out.bias"]
        o = rearrange(o, "(b h w) (f n m) c -> (b f) (h n w m) c", h=height // grid, w=width // grid, f=frames,
                      n=grid, m=grid)
        hidden = hidden + o
    normed = F.layer_norm(hidden, (c,), sd["ff_norm.weight"], sd["ff_norm.bias"], eps=1e-5)
    a, gate = (normed @ sd["ff.fc1.weight"].T + sd["ff.fc1.bias"]).chunk(2, dim=-1)
    hidden = hidden + (a * F.gelu(gate)) @ sd["ff.fc2.weight"].T + sd["ff.fc2.bias"]
    return hidden @ sd["proj_out.weight"].T + sd["proj_out.bias"] + x


def test_fresh_module_is_identity():
    torch.manual_seed(0)
    mm = MotionModule(32, num_heads=4, grid=2, norm_groups=8)
    x = torch.randn(2 * 3, 4 * 6, 32) * 5
    assert torch.equal(mm(x, TokenGrid(3, 4, 6)), x)
    assert torch.count_nonzero(mm.proj_out.weight) == 0 and torch.count_nonzero(mm.proj_out.bias) == 0


@pytest.mark.parametrize(("frames", "height", "width", "grid"),
                         [(3, 4, 6, 2), (1, 2, 2, 2), (5, 3, 5, 1), (2, 6, 6, 3)])
def test_matches_plain_pytorch_reference(frames, height, width, grid):
    torch.manual_seed(1)
    dim, heads, groups = 32, 4, 8
    mm = MotionModule(dim, num_heads=heads, grid=grid, norm_groups=groups, max_len=16)
    _randomise_(mm, seed=2)
    assert torch.count_nonzero(mm.proj_out.weight) > 0
    x = torch.randn(2 * frames, height * width, dim, generator=torch.Generator().manual_seed(3))
    out = mm(x, TokenGrid(frames, height, width))
    expected = _reference(mm.state_dict(), x, frames, height, width, heads, grid, groups)
    torch.testing.assert_close(out, expected, atol=2e-5, rtol=1e-5)


def test_grads_flow_and_frames_interact():
    torch.manual_seed(4)
    mm = MotionModule(16, num_heads=2, grid=2, norm_groups=4)
    _randomise_(mm, seed=5)
    x = torch.randn(4, 16, 16, requires_grad=True)  # B=1, F=4, 4x4 tokens
    out = mm(x, TokenGrid(4, 4, 4))
    out[3].sum().backward()  # last frame's output ...
    assert x.grad[0].abs().sum() > 0  # ... depends on the first frame
    assert all(p.grad is not None for p in mm.parameters())


def test_bad_inputs_raise():
    mm = MotionModule(16, num_heads=2, grid=2, norm_groups=4, max_len=8)
    x = torch.randn(6, 16, 16)
    with pytest.raises(ValueError, match="multiple of num_frames"):
        mm(x, TokenGrid(4, 4, 4))
    with pytest.raises(ValueError, match="height\\*width"):
        mm(x, TokenGrid(3, 4, 3))
    with pytest.raises(ValueError, match="grid=2"):
        mm(torch.randn(6, 12, 16), TokenGrid(3, 3, 4))
    with pytest.raises(ValueError, match="max_len=8"):
        mm(torch.randn(9, 16, 16), TokenGrid(9, 4, 4))
    with pytest.raises(ValueError, match="expected"):
        mm(torch.randn(6, 16, 8), TokenGrid(3, 4, 4))
    with pytest.raises(ValueError, match="divisible by num_heads"):
        MotionModule(30, num_heads=4, norm_groups=2)


def test_triton_backend_matches_sdpa():
    pytest.importorskip("ea_dit.kernels.temporal_attention")
    torch.manual_seed(6)
    mm = MotionModule(32, num_heads=2, grid=2, norm_groups=8)
    _randomise_(mm, seed=7)
    x = torch.randn(2 * 2, 4 * 4, 32)
    expected = mm(x, TokenGrid(2, 4, 4))
    mm.set_attention_backend("triton")
    torch.testing.assert_close(mm(x, TokenGrid(2, 4, 4)), expected, atol=1e-4, rtol=1e-4)
