"""Hybrid window attention against dense attention under the equivalent boolean mask (forward and
gradients), reachability of the pattern, sparsity of the computed blocks, and the FlexAttention kernel."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ea_dit.grid_reshape import TokenGrid
from ea_dit.window_attention import (
    ORDERS,
    HybridWindowAttention,
    _make_plan,
    head_orders,
    hybrid_window_attention,
    order_ranks,
    window_attention_mask,
    window_settings,
)


def dense_reference(q, k, v, mask):
    """Plain masked softmax attention in (B, L, H, D) layout; mask (H, L, L)."""
    s = torch.einsum("bqhd,bkhd->bhqk", q, k) / q.shape[-1] ** 0.5
    p = s.masked_fill(~mask[None], float("-inf")).softmax(-1)
    return torch.einsum("bhqk,bkhd->bqhd", p, v)


def independent_mask(num_heads, f, h, w, half, stride, orders=ORDERS):
    """The pattern written out per token pair from coordinates (no rank tables, no blocks)."""
    length = f * h * w
    coords = [(a, b, c) for a in range(f) for b in range(h) for c in range(w)]
    sizes = {"f": f, "h": h, "w": w}
    groups = min(len(orders), num_heads)
    mask = torch.zeros(num_heads, length, length, dtype=torch.bool)
    for head in range(num_heads):
        # contiguous head groups: group j holds heads j*H//n .. (j+1)*H//n - 1
        order = next(orders[j] for j in range(groups) if j * num_heads // groups <= head < (j + 1) * num_heads // groups)
        for i, ci in enumerate(coords):
            for j, cj in enumerate(coords):
                ri = rj = 0
                for axis in order:
                    ri = ri * sizes[axis] + ci["fhw".index(axis)]
                    rj = rj * sizes[axis] + cj["fhw".index(axis)]
                mask[head, i, j] = abs(ri - rj) <= half or (stride > 0 and j % stride == 0)
    return mask


def test_mask_matches_coordinate_definition():
    half, stride = window_settings(3, 2, 5, window=7, num_global_keys=4)
    assert (half, stride) == (3, 4)  # stride = min(ceil(30 / 4), half + 1)
    ref = independent_mask(7, 3, 2, 5, half, stride)
    assert torch.equal(window_attention_mask(7, 3, 2, 5, window=7, num_global_keys=4), ref)
    # the six orders are six different patterns
    assert len({order_ranks(o, 3, 2, 5).tolist().__str__() for o in ORDERS}) == 6


def test_head_groups():
    assert head_orders(16) == [("fhw", 0, 2), ("fwh", 2, 5), ("hfw", 5, 8), ("hwf", 8, 10), ("wfh", 10, 13),
                               ("whf", 13, 16)]
    assert [g[0] for g in head_orders(4)] == ["fhw", "fwh", "hfw", "hwf"]
    with pytest.raises(ValueError, match="permutation"):
        head_orders(4, ["fhh"])


CASES = [
    # (batch, frames, height, width, heads, options)
    (2, 3, 5, 7, 6, dict(num_global_keys=10)),
    (1, 5, 3, 3, 7, dict(window=4, num_global_keys=0)),
    (1, 2, 3, 5, 4, dict()),
    (2, 7, 1, 3, 3, dict(window=2, orders=("hwf", "fhw"))),
    (1, 1, 1, 1, 2, dict()),
]


@pytest.mark.parametrize("block", [4, 16])
@pytest.mark.parametrize("b,f,h,w,heads,options", CASES)
def test_blocks_kernel_matches_dense_forward_and_grad(b, f, h, w, heads, options, block):
    torch.manual_seed(0)
    length = f * h * w
    q, k, v = (torch.randn(b, length, heads, 8, dtype=torch.float64, requires_grad=True) for _ in range(3))
    mask = window_attention_mask(heads, f, h, w, **options)
    ref = dense_reference(q, k, v, mask)
    out = hybrid_window_attention(q, k, v, f, h, w, kernel="blocks", block_size=block, **options)
    # fp64 on both sides: differences are rounding only
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    g = torch.randn_like(out)
    for got, want in zip(torch.autograd.grad(out, (q, k, v), g), torch.autograd.grad(ref, (q, k, v), g)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_fp32_and_auto_kernel_small_grid():
    torch.manual_seed(1)
    q, k, v = (torch.randn(1, 4 * 3 * 5, 6, 16) for _ in range(3))
    ref = dense_reference(q, k, v, window_attention_mask(6, 4, 3, 5))
    out = hybrid_window_attention(q, k, v, 4, 3, 5)  # "auto" -> "blocks" on a short CPU sequence
    # fp32 softmax attention over <= 60 keys: a few ulps of the O(1) outputs
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_computed_blocks_are_sparse_and_cover_the_pattern():
    """The plan computes only band + global blocks, and every allowed pair lies in a computed block."""
    f, h, w, heads, block = 8, 8, 8, 6, 16
    half, stride = window_settings(f, h, w, num_global_keys=32)  # window 64 tokens, 32 global keys
    length = f * h * w
    grank = torch.stack([order_ranks(o, f, h, w)[::stride] for o, h0, h1 in head_orders(heads)
                         for _ in range(h1 - h0)])
    plan = _make_plan(length, half, grank, block, torch.device("cpu"))
    nq = length // block
    num_global = grank.shape[1]
    computed = plan.valid.sum().item() * block * block
    dense_pairs = nq * block * (length + num_global)
    assert computed < 0.35 * dense_pairs
    # coverage: in gathered coordinates, any allowed (query, video key) pair is in a listed band block
    qi = torch.arange(length)[:, None]
    ki = torch.arange(length)[None]
    allowed = (qi - ki).abs() <= half
    listed = torch.zeros(nq, nq, dtype=torch.bool)
    for i in range(nq):
        listed[i, plan.ids[i][plan.valid[i]][plan.ids[i][plan.valid[i]] < nq]] = True
    block_allowed = allowed.reshape(nq, block, nq, block).any(3).any(1)
    assert not (block_allowed & ~listed).any()
    # full blocks need no mask: every pair in them is allowed
    for i in range(nq):
        for j in plan.ids[i][plan.full[i]].tolist():
            assert allowed[i * block:(i + 1) * block, j * block:(j + 1) * block].all()


def _reach_depth(mask: torch.Tensor, max_depth: int = 16) -> int:
    """Layers until every token's output depends on every token, from the union over heads of the mask."""
    adj = mask.any(0).double()  # (L, L): query i reads key j in one layer (heads mix in the projection)
    reach = adj.clone()
    for depth in range(1, max_depth + 1):
        if bool((reach > 0).all()):
            return depth
        reach = ((reach @ adj) > 0).double()
    return max_depth + 1


@pytest.mark.parametrize("num_global_keys", [1, 8, 1024])
@pytest.mark.parametrize("f,h,w,heads", [(9, 4, 4, 6), (5, 7, 3, 16), (13, 2, 3, 6), (3, 9, 11, 8)])
def test_every_token_reaches_every_other_in_two_layers(f, h, w, heads, num_global_keys):
    """The documented claim: with global keys (any number) every token reaches every other in 2 layers."""
    mask = window_attention_mask(heads, f, h, w, num_global_keys=num_global_keys)
    depth = _reach_depth(mask)
    assert depth <= 2
    if num_global_keys < 16:  # few global keys: genuinely sparse, one layer is not enough
        assert depth == 2
        assert mask.double().mean() < 0.8


def test_windows_alone_connect_the_grid():
    """Without global keys the six orders still connect the grid, in a few layers."""
    mask = window_attention_mask(6, 9, 5, 4, num_global_keys=0)
    depth = _reach_depth(mask)
    assert 2 < depth <= 6


def test_module_with_window_covering_everything_is_full_attention():
    """Only the pattern differs: the same qkv/proj weights with a window over all tokens = full 3D attention."""
    torch.manual_seed(2)
    dim, heads, f, h, w = 24, 6, 3, 4, 5
    hwa = HybridWindowAttention(dim, heads, window=2 * f * h * w + 1, kernel="blocks", block_size=8).double()
    x = torch.randn(2, f * h * w, dim, dtype=torch.float64)
    q, k, v = hwa.qkv(x).unflatten(-1, (3, heads, dim // heads)).unbind(2)
    full = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)
    ref = hwa.proj(full.flatten(2))
    torch.testing.assert_close(hwa(x, TokenGrid(f, h, w)), ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(hwa(x, f, h, w), ref, rtol=1e-10, atol=1e-10)  # the pinned form
    assert set(hwa.state_dict()) == {"qkv.weight", "qkv.bias", "proj.weight", "proj.bias"}


def test_module_input_checks():
    hwa = HybridWindowAttention(16, 4)
    with pytest.raises(ValueError, match="2\\*3\\*3 = 18"):
        hwa(torch.randn(1, 17, 16), TokenGrid(2, 3, 3))
    with pytest.raises(ValueError, match="expected \\(batch, frames\\*height\\*width, 16\\)"):
        hwa(torch.randn(1, 18, 8), TokenGrid(2, 3, 3))
    with pytest.raises(TypeError, match="num_frames, height and width"):
        hwa(torch.randn(1, 18, 16), 2)
    with pytest.raises(ValueError, match="kernel"):
        HybridWindowAttention(16, 4, kernel="cuda")
    with pytest.raises(ValueError, match="not divisible"):
        HybridWindowAttention(18, 4)


@pytest.mark.slow
def test_flex_kernel_matches_blocks_kernel():
    """FlexAttention (compiled, inference on the CPU) computes the same pattern as the plain kernel."""
    pytest.importorskip("torch.nn.attention.flex_attention")
    torch.manual_seed(3)
    f, h, w, heads = 5, 6, 7, 6
    q, k, v = (torch.randn(1, f * h * w, heads, 16) for _ in range(3))
    ref = dense_reference(q, k, v, window_attention_mask(heads, f, h, w, window=9, num_global_keys=20))
    with torch.no_grad():
        out = hybrid_window_attention(q, k, v, f, h, w, window=9, num_global_keys=20, kernel="flex", block_size=128)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# in the DiT: per-layer choice, one checkpoint for every layer type
# ----------------------------------------------------------------------------------------------


def _dit_inputs(frames, seed=0):
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(2, 4, frames, 8, 8, generator=g)
    text = torch.randn(2, 5, 32, generator=g)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    return latents, torch.tensor([10, 700]), text, mask


def _randomized_dit(**overrides):
    from ea_dit import VideoDiT, VideoDiTConfig

    torch.manual_seed(0)
    model = VideoDiT(VideoDiTConfig.tiny(**overrides)).double().eval()
    with torch.no_grad():  # leave the zero inits: every layer must matter for the comparison
        for p in model.parameters():  # fp32-representable, as saved/loaded
            p.add_(0.05 * torch.randn_like(p)).copy_(p.float())
    return model


def test_dit_layer_types_load_one_checkpoint_and_differ_only_in_pattern(tmp_path):
    from ea_dit import VideoDiT, VideoDiTConfig

    spatial = _randomized_dit()
    spatial.save_pretrained(tmp_path / "spatial")
    mixed_types = ("spatial", "window", "full", "window")
    # a window covering every token: hybrid window attention == full attention, so the mixed model must
    # equal the all-"full" model where the window replaced full, and spatial where spatial stayed
    wide = VideoDiT.from_pretrained(tmp_path / "spatial", self_attention=mixed_types, window_size=10_000).double()
    full = VideoDiT.from_pretrained(tmp_path / "spatial", self_attention=("spatial", "full", "full", "full")).double()
    assert isinstance(wide.blocks[1].attn, HybridWindowAttention)
    assert set(wide.state_dict()) == set(spatial.state_dict())
    for a, b in zip(wide.state_dict().values(), spatial.state_dict().values()):
        assert torch.equal(a, b)
    inputs = _dit_inputs(frames=3)
    with torch.no_grad():
        torch.testing.assert_close(wide(*inputs), full(*inputs), rtol=1e-9, atol=1e-9)
        # one frame: full 3D attention is spatial attention
        one = _dit_inputs(frames=1)
        torch.testing.assert_close(full(*one), spatial(*one), rtol=1e-9, atol=1e-9)
        # a real window (5 tokens, 4 global keys) is a different pattern, so a different output
        narrow = VideoDiT(VideoDiTConfig.tiny(self_attention=mixed_types, window_size=5, window_global_keys=4))
        narrow.load_state_dict(spatial.state_dict())
        assert not torch.allclose(narrow.double()(*inputs), full(*inputs), atol=1e-4)
    # the layer types survive save/load
    wide.save_pretrained(tmp_path / "mixed")
    assert VideoDiT.from_pretrained(tmp_path / "mixed").config.self_attention == mixed_types


def test_dit_window_layers_train_on_cpu():
    """Gradients flow through window layers (the plain block-sparse kernel) with checkpointing on."""
    model = _randomized_dit(self_attention="window", window_size=5, window_global_keys=4).float().train()
    model.enable_gradient_checkpointing()
    latents, t, text, mask = _dit_inputs(frames=3)
    model(latents, t, text, mask).square().mean().backward()
    for block in model.blocks:
        assert block.attn.qkv.weight.grad is not None and block.attn.qkv.weight.grad.abs().sum() > 0


def test_dit_config_rejects_bad_layer_types():
    from ea_dit import VideoDiTConfig

    with pytest.raises(ValueError, match="unknown"):
        VideoDiTConfig.tiny(self_attention="sliding")
    with pytest.raises(ValueError, match="depth is 4"):
        VideoDiTConfig.tiny(self_attention=("window", "full"))
