"""Hybrid window attention (EasyAnimate V5): sub-quadratic self-attention over a video token grid.

Full 3D attention over the `L = F*H*W` tokens of a video costs O(L^2). Hybrid window attention splits
the heads into groups; each group orders the tokens along a different order of the (frame, height,
width) axes and attends within a 1D sliding window along that order:

    order "fhw" (frame slowest): the window is a band of about one frame        -> spatial context
    order "hwf" (frame fastest): the window holds every frame of nearby pixels   -> temporal context
    ... the six orders together see every direction.

Every query also attends to a strided subset of the video tokens (every `stride`-th token in frame-major
order, about `num_global_keys` of them), which keeps long-range context. The keys a query sees are the
union of its window and the strided keys, under one softmax.

Reachability: with global keys and a head group in the frame-major order "fhw", `stride` is capped at
`window // 2 + 1`, so every token lies in the "fhw" window of some strided key. Information then flows
from any token to any other in **2 layers** (token -> a strided key's window -> every query). Without
global keys the window groups alone connect the grid in a few more layers (see the tests).

Sparsity: each head group's q/k/v are gathered into that group's order (an O(L) copy), so its window is
a band of blocks along the diagonal; the strided keys are gathered into a separate chunk of keys after
the (block-padded) video keys. Only the band blocks and the global chunk are computed; a query costs
`O(window + L / stride)`, so time grows linearly in frames at a fixed frame size. Two kernels:

- `"flex"`: PyTorch FlexAttention (`torch.compile(flex_attention)` with a `BlockMask` built directly
  from the band structure). Forward and backward on CUDA; on the CPU PyTorch's compiled FlexAttention
  runs inference only, so a CPU call that needs gradients uses `"blocks"`.
- `"blocks"`: plain PyTorch block-sparse attention: for each block of queries, gather its key blocks and
  run a masked softmax over them only; a custom autograd function recomputes the probabilities in the
  backward (as flash attention does), chunk by chunk, so memory stays O(L * keys per query) per chunk.
- `"auto"` (default): "flex" on CUDA and for CPU inference on long sequences (>= 4096 tokens, where the
  one-off compilation pays off), else "blocks".

:func:`window_attention_mask` is the plain dense reference: the same pattern as a `(heads, L, L)`
boolean mask in the original token order, for tests and for checking reachability.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from ea_dit.grid_reshape import TokenGrid

ORDERS = ("fhw", "fwh", "hfw", "hwf", "wfh", "whf")  # token orders, slowest axis first
KERNELS = ("auto", "flex", "blocks")
FLEX_MIN_TOKENS = 4096  # "auto" compiles FlexAttention on the CPU only from this many tokens

__all__ = ["ORDERS", "HybridWindowAttention", "hybrid_window_attention", "window_attention_mask",
           "head_orders", "window_settings", "order_ranks"]


# ----------------------------------------------------------------------------------------------
# the pattern
# ----------------------------------------------------------------------------------------------


def _check_orders(orders: Sequence[str]) -> tuple[str, ...]:
    orders = tuple(orders)
    if not orders:
        raise ValueError("orders is empty; give at least one order of the axes 'f', 'h', 'w', e.g. 'fhw'")
    for o in orders:
        if not isinstance(o, str) or sorted(o) != ["f", "h", "w"]:
            raise ValueError(f"order {o!r} is not a permutation of 'fhw' (frame, height, width; slowest first)")
    return orders


def head_orders(num_heads: int, orders: Sequence[str] = ORDERS) -> list[tuple[str, int, int]]:
    """Split heads into `min(len(orders), num_heads)` contiguous groups: `[(order, first_head, end_head)]`.

    16 heads over the six orders give groups of 2 or 3 heads; 4 heads use the first four orders, one
    head each.
    """
    orders = _check_orders(orders)
    n = min(len(orders), num_heads)
    return [(orders[j], j * num_heads // n, (j + 1) * num_heads // n) for j in range(n)]


def order_ranks(order: str, num_frames: int, height: int, width: int,
                device: torch.device | str | None = None) -> torch.Tensor:
    """(F*H*W,) int64: position of each token (frame-major, row-major order) in the sequence ordered by `order`.

    `order` lists the axes slowest first: "fhw" is the identity, "hwf" puts the frames of one pixel next
    to each other.
    """
    sizes = {"f": num_frames, "h": height, "w": width}
    coords = torch.meshgrid(*(torch.arange(n, device=device) for n in (num_frames, height, width)), indexing="ij")
    coord = dict(zip("fhw", coords))
    rank = torch.zeros_like(coords[0])
    for axis in order:
        rank = rank * sizes[axis] + coord[axis]
    return rank.flatten()


def window_settings(num_frames: int, height: int, width: int, window: int | None = None,
                    num_global_keys: int = 1024) -> tuple[int, int]:
    """`(half, stride)` of the pattern for a grid.

    `half = window // 2` (default window `height * width`, one frame): a query at position r of its
    order sees keys at positions r - half .. r + half. `stride`: every stride-th token (frame-major) is a
    global key, `stride = min(ceil(L / num_global_keys), half + 1)` (the cap makes every token lie in a
    global key's frame-major window); 0 when num_global_keys is 0 (no global keys).
    """
    if min(num_frames, height, width) < 1:
        raise ValueError(f"token grid {num_frames}x{height}x{width} (frames x height x width) must be at least 1x1x1")
    if window is None:
        window = height * width
    if window < 1:
        raise ValueError(f"window must be >= 1 token, got {window}")
    if num_global_keys < 0:
        raise ValueError(f"num_global_keys must be >= 0, got {num_global_keys}")
    half = window // 2
    if num_global_keys == 0:
        return half, 0
    length = num_frames * height * width
    return half, max(1, min(math.ceil(length / num_global_keys), half + 1))


def window_attention_mask(num_heads: int, num_frames: int, height: int, width: int, window: int | None = None,
                          orders: Sequence[str] = ORDERS, num_global_keys: int = 1024,
                          device: torch.device | str | None = None) -> torch.Tensor:
    """The dense reference of the pattern: `(num_heads, L, L)` bool, True = query i attends to key j.

    Tokens in the original frame-major order. `mask[h, i, j] = |r(i) - r(j)| <= half or j % stride == 0`
    with r the ranks of head h's order. O(L^2) memory: for tests and small grids only.
    """
    half, stride = window_settings(num_frames, height, width, window, num_global_keys)
    length = num_frames * height * width
    mask = torch.empty(num_heads, length, length, dtype=torch.bool, device=device)
    is_global = torch.zeros(length, dtype=torch.bool, device=device)
    if stride:
        is_global[::stride] = True
    for order, h0, h1 in head_orders(num_heads, orders):
        r = order_ranks(order, num_frames, height, width, device)
        mask[h0:h1] = ((r[:, None] - r[None, :]).abs() <= half) | is_global[None, :]
    return mask


# ----------------------------------------------------------------------------------------------
# block structure
# ----------------------------------------------------------------------------------------------


@dataclass
class _Plan:
    """Keys and block structure of one call, in the gathered layout.

    Queries: L tokens in their head's order. Keys: the L video tokens in that order, zero padding up to
    `video_len` (a multiple of `block`), then G global keys. `grank (H, G)`: position of each global key
    in head h's order (to drop it from the global chunk where it already lies in the window).
    """

    length: int
    video_len: int
    num_global: int
    half: int
    block: int
    grank: torch.Tensor  # (H, G) int64
    ids: torch.Tensor  # (nq, M) int64 key blocks per query block (band then global), padded with 0
    valid: torch.Tensor  # (nq, M) bool
    full: torch.Tensor  # (nq, M) bool, block entirely inside the window (no mask needed)

    @property
    def key_len(self) -> int:
        return self.video_len + self.num_global

    def mask(self, h: torch.Tensor, qi: torch.Tensor, ki: torch.Tensor) -> torch.Tensor:
        """Elementwise: may query qi (gathered position) of head h see key ki? (broadcasting int tensors)."""
        allowed = (ki < self.length) & ((qi - ki).abs() <= self.half)
        if self.num_global:
            g = (ki - self.video_len).clamp(0, self.num_global - 1)
            in_chunk = (ki >= self.video_len) & (ki < self.key_len)
            allowed = allowed | (in_chunk & ((qi - self.grank[h, g]).abs() > self.half))
        return allowed


def _make_plan(length: int, half: int, grank: torch.Tensor, block: int, device: torch.device) -> _Plan:
    num_global = grank.shape[1]
    nq = -(-length // block)
    video_len = nq * block
    ng = -(-num_global // block)
    i = torch.arange(nq, device=device)
    q_lo, q_hi = i * block, torch.clamp(i * block + block - 1, max=length - 1)
    lo = torch.clamp(q_lo - half, min=0) // block
    hi = torch.clamp(q_hi + half, max=length - 1) // block
    width = int((hi - lo).max()) + 1
    band = lo[:, None] + torch.arange(width, device=device)[None]  # (nq, width)
    band_valid = band <= hi[:, None]
    # every (q, k) pair of the block pair within the window, and no padded key
    full = (band_valid & ((i[:, None] * block + block - 1 - band * block) <= half)
            & ((band * block + block - 1 - i[:, None] * block) <= half) & (band * block + block <= length))
    glob = (nq + torch.arange(ng, device=device))[None].expand(nq, ng)
    ids = torch.cat([torch.where(band_valid, band, 0), glob], dim=1)
    valid = torch.cat([band_valid, torch.ones(nq, ng, dtype=torch.bool, device=device)], dim=1)
    full = torch.cat([full, torch.zeros(nq, ng, dtype=torch.bool, device=device)], dim=1)
    return _Plan(length, video_len, num_global, half, block, grank, ids, valid, full)


# ----------------------------------------------------------------------------------------------
# kernel "blocks": plain PyTorch block-sparse attention
# ----------------------------------------------------------------------------------------------

_CHUNK_ELEMENTS = 1 << 23  # score elements per chunk of query blocks (32 MiB in fp32)


def _pad_blocks(x: torch.Tensor, length: int, block: int) -> torch.Tensor:
    """(B, H, L', D) -> (B, H, length/block, block, D), zero-padded at the end."""
    pad = length - x.shape[2]
    if pad:
        x = torch.cat([x, x.new_zeros(*x.shape[:2], pad, x.shape[3])], dim=2)
    return x.unflatten(2, (length // block, block))


class _BlockSparseAttention(torch.autograd.Function):
    """Window band + global keys under one softmax, computing only the band's key blocks.

    q, k, v: (B, H, L, D) gathered in each head's order; kg, vg: (B, H, G, D) global keys -> (B, H, L, D).
    Query block i scores the key blocks `plan.ids[i, :band]` (gathered) and all G global keys (one
    matmul); the probabilities are recomputed in the backward from the saved log-sum-exp.
    """

    @staticmethod
    def _scores(ctx, qb, kb, kg, a, b):
        """Masked fp32 scores of query blocks a..b-1: band (B, H, n, blk, Mb*blk), global (B, H, n, blk, G)."""
        plan, blk, acc, scale = ctx.plan, ctx.plan.block, ctx.acc, ctx.scale
        ids = plan.ids[a:b, : ctx.band]
        ar = torch.arange(blk, device=ids.device)
        qi = (torch.arange(a, b, device=ids.device)[:, None] * blk + ar)[:, :, None]  # (n, blk, 1)
        ki = (ids[:, :, None] * blk + ar).flatten(1)[:, None, :]  # (n, 1, Mb*blk)
        valid = plan.valid[a:b, : ctx.band, None].expand(-1, -1, blk).flatten(1)[:, None, :]
        band_ok = valid & (ki < plan.length) & ((qi - ki).abs() <= plan.half)  # same for every head
        kband = kb[:, :, ids].flatten(3, 4)  # (B, H, n, Mb*blk, D)
        s = torch.matmul(qb[:, :, a:b], kband.transpose(-1, -2)).to(acc) * scale
        s = s.masked_fill(~band_ok, float("-inf"))
        if not plan.num_global:
            return s, None, kband
        # a global key already inside the query's window is counted there only
        g_ok = (qi[None] - plan.grank[:, None, None, :]).abs() > plan.half  # (H, n, blk, G)
        sg = torch.matmul(qb[:, :, a:b], kg[:, :, None].transpose(-1, -2)).to(acc) * scale
        return s, sg.masked_fill(~g_ok, float("-inf")), kband

    @staticmethod
    def forward(ctx, q, k, v, kg, vg, plan: _Plan):
        blk = plan.block
        nq = plan.ids.shape[0]
        ctx.plan, ctx.band, ctx.scale = plan, plan.ids.shape[1] - (-(-plan.num_global // blk)), q.shape[-1] ** -0.5
        ctx.acc = torch.promote_types(q.dtype, torch.float32)  # softmax in fp32 (fp64 for fp64 inputs)
        qb, kb, vb = (_pad_blocks(t, nq * blk, blk) for t in (q, k, v))
        out = q.new_empty(q.shape[0], q.shape[1], nq, blk, q.shape[3])
        lse = torch.empty(q.shape[0], q.shape[1], nq, blk, device=q.device, dtype=ctx.acc)
        step = max(1, _CHUNK_ELEMENTS // (q.shape[0] * q.shape[1] * blk * (ctx.band * blk + plan.num_global)))
        ctx.step = step
        for a in range(0, nq, step):
            b = min(a + step, nq)
            s, sg, _ = _BlockSparseAttention._scores(ctx, qb, kb, kg, a, b)
            m = s.logsumexp(-1) if sg is None else torch.logaddexp(s.logsumexp(-1), sg.logsumexp(-1))
            m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))  # a query with no key gets zeros
            o = torch.matmul(torch.exp(s - m[..., None]).to(v.dtype), vb[:, :, plan.ids[a:b, : ctx.band]].flatten(3, 4))
            if sg is not None:
                o = o + torch.matmul(torch.exp(sg - m[..., None]).to(v.dtype), vg[:, :, None])
            out[:, :, a:b], lse[:, :, a:b] = o, m
        out = out.flatten(2, 3)[:, :, : q.shape[2]]
        ctx.save_for_backward(q, k, v, kg, vg, out, lse)
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, kg, vg, out, lse = ctx.saved_tensors
        plan, blk, acc, scale = ctx.plan, ctx.plan.block, ctx.acc, ctx.scale
        nq = plan.ids.shape[0]
        qb, kb, vb, dob = (_pad_blocks(t, nq * blk, blk) for t in (q, k, v, dout.contiguous()))
        delta = _pad_blocks((dout.to(acc) * out.to(acc)).sum(-1, keepdim=True), nq * blk, blk)[..., 0]
        dq = torch.zeros_like(qb, dtype=acc)
        dk, dv = torch.zeros_like(kb, dtype=acc), torch.zeros_like(vb, dtype=acc)
        dkg, dvg = torch.zeros_like(kg, dtype=acc), torch.zeros_like(vg, dtype=acc)
        for a in range(0, nq, ctx.step):
            b = min(a + ctx.step, nq)
            ids = plan.ids[a:b, : ctx.band]
            s, sg, kband = _BlockSparseAttention._scores(ctx, qb, kb, kg, a, b)
            do, qa, d = dob[:, :, a:b].to(acc), qb[:, :, a:b].to(acc), delta[:, :, a:b, :, None]
            p = torch.exp(s - lse[:, :, a:b, :, None])  # (B, H, n, blk, Mb*blk)
            vband = vb[:, :, ids].flatten(3, 4).to(acc)
            ds = p * (torch.matmul(do, vband.transpose(-1, -2)) - d) * scale
            dq[:, :, a:b] = torch.matmul(ds, kband.to(acc))
            flat = ids.flatten()
            dv.index_add_(2, flat, torch.matmul(p.transpose(-1, -2), do).unflatten(3, (ids.shape[1], blk)).flatten(2, 3))
            dk.index_add_(2, flat, torch.matmul(ds.transpose(-1, -2), qa).unflatten(3, (ids.shape[1], blk)).flatten(2, 3))
            if sg is not None:
                pg = torch.exp(sg - lse[:, :, a:b, :, None])  # (B, H, n, blk, G)
                dsg = pg * (torch.matmul(do, vg[:, :, None].to(acc).transpose(-1, -2)) - d) * scale
                dq[:, :, a:b] += torch.matmul(dsg, kg[:, :, None].to(acc))
                dvg += torch.matmul(pg.flatten(2, 3).transpose(-1, -2), do.flatten(2, 3))
                dkg += torch.matmul(dsg.flatten(2, 3).transpose(-1, -2), qa.flatten(2, 3))

        def trim(t, ref):
            return t.flatten(2, 3)[:, :, : ref.shape[2]].to(ref.dtype)

        return trim(dq, q), trim(dk, k), trim(dv, v), dkg.to(kg.dtype), dvg.to(vg.dtype), None


# ----------------------------------------------------------------------------------------------
# kernel "flex": FlexAttention with a block mask
# ----------------------------------------------------------------------------------------------

_compiled_flex = None


def _flex(q, k, v, plan: _Plan) -> torch.Tensor:
    from torch.nn.attention.flex_attention import BlockMask, flex_attention

    global _compiled_flex
    if _compiled_flex is None:
        _compiled_flex = torch.compile(flex_attention, dynamic=False)
    partial = plan.valid & ~plan.full
    num_kv_blocks = -(-plan.key_len // plan.block)

    def compact(sel):  # (1, 1, nq) counts and (1, 1, nq, num_kv_blocks) ids, selected ones first in each row
        order = torch.argsort((~sel).to(torch.int8), dim=1, stable=True)
        ids = torch.gather(plan.ids, 1, order)
        ids = torch.cat([ids, ids.new_zeros(ids.shape[0], num_kv_blocks - ids.shape[1])], dim=1)
        return sel.sum(1).to(torch.int32)[None, None], ids.to(torch.int32)[None, None]

    kv_num, kv_idx = compact(partial)
    full_num, full_idx = compact(plan.full)

    def mask_mod(b, h, q_idx, kv_idx):
        return plan.mask(h, q_idx, kv_idx)

    block_mask = BlockMask.from_kv_blocks(kv_num, kv_idx, full_num, full_idx, BLOCK_SIZE=plan.block,
                                          mask_mod=mask_mod, seq_lengths=(plan.length, plan.key_len))
    return _compiled_flex(q, k, v, block_mask=block_mask)


# ----------------------------------------------------------------------------------------------
# functional entry point and module
# ----------------------------------------------------------------------------------------------


def _pick_kernel(kernel: str, q: torch.Tensor, length: int) -> str:
    if kernel not in KERNELS:
        raise ValueError(f"window attention kernel {kernel!r} is unknown; choose one of {', '.join(KERNELS)}")
    needs_grad = torch.is_grad_enabled() and q.requires_grad
    if kernel == "flex" and q.device.type == "cpu" and needs_grad:
        return "blocks"  # PyTorch's compiled FlexAttention has no CPU backward
    if kernel == "auto":
        cuda = q.device.type == "cuda"
        return "flex" if cuda or (not needs_grad and length >= FLEX_MIN_TOKENS) else "blocks"
    return kernel


def hybrid_window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_frames: int, height: int,
                            width: int, window: int | None = None, orders: Sequence[str] = ORDERS,
                            num_global_keys: int = 1024, kernel: str = "auto", block_size: int = 128) -> torch.Tensor:
    """Hybrid window self-attention over a video token grid.

    Args:
        q, k, v: (B, L, H, D) with L = num_frames*height*width tokens, frame-major then row-major.
        window: tokens in each sliding window (default height*width); see :func:`window_settings`.
        orders: axis orders of the head groups (default all six; heads split by :func:`head_orders`).
        num_global_keys: about how many strided video keys every query also sees (0 = none).
        kernel: "auto" | "flex" | "blocks" (see the module docstring); all compute the same thing.
        block_size: query/key block of the sparsity pattern (128 is FlexAttention's).

    Returns:
        (B, L, H, D) in the dtype of q, softmax scale 1/sqrt(D); equal to dense attention under
        :func:`window_attention_mask`.
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor) or t.dim() != 4:
            raise ValueError(f"hybrid_window_attention: {name} must be a (batch, tokens, heads, head_dim) tensor, "
                             f"got {tuple(getattr(t, 'shape', ())) or type(t).__name__}")
    if not (q.shape == k.shape == v.shape):
        raise ValueError(f"hybrid_window_attention: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)} "
                         "must have the same shape (self-attention)")
    length = num_frames * height * width
    if q.shape[1] != length:
        raise ValueError(f"hybrid_window_attention: q has {q.shape[1]} tokens, but the grid {num_frames}x{height}x"
                         f"{width} (frames x height x width) has {length}")
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    half, stride = window_settings(num_frames, height, width, window, num_global_keys)
    groups = head_orders(q.shape[2], orders)
    kernel = _pick_kernel(kernel, q, length)
    dev = q.device

    sizes = {"f": num_frames, "h": height, "w": width}
    batch, heads, dim = q.shape[0], q.shape[2], q.shape[3]
    # each group's tokens in its own order, via one strided copy per group (B, L, H, D) <-> (B, H, L, D)
    perms = [(0, 4, *(1 + "fhw".index(a) for a in o), 5) for o, _, _ in groups]
    shapes = [tuple(sizes[a] for a in o) for o, _, _ in groups]

    def gather_into(dst, src):  # dst (B, H, >= L, D): its first L tokens get src (B, L, H, D) in head order
        grid6 = src.unflatten(1, (num_frames, height, width))
        for (_, h0, h1), perm, shape in zip(groups, perms, shapes):
            dst[:, h0:h1, :length].unflatten(2, shape).copy_(grid6[:, :, :, :, h0:h1].permute(perm))
        return dst

    grank = torch.zeros(heads, 0, dtype=torch.long, device=dev)
    if stride:
        grank = torch.cat([order_ranks(o, num_frames, height, width, dev)[::stride].expand(h1 - h0, -1)
                           for o, h0, h1 in groups])  # (H, G)
    plan = _make_plan(length, half, grank, block_size, dev)
    qg = gather_into(q.new_empty(batch, heads, length, dim), q)
    if kernel == "flex":
        # keys: video tokens in head order, zero padding to whole blocks, then the global keys
        kk, vv = (t.new_empty(batch, heads, plan.key_len, dim) for t in (k, v))
        for buf, t in ((kk, k), (vv, v)):
            gather_into(buf, t)
            buf[:, :, length:plan.video_len].zero_()
            buf[:, :, plan.video_len:].copy_(t[:, ::stride].transpose(1, 2))
        out = _flex(qg, kk, vv, plan)
    else:
        kg, vg = (gather_into(t.new_empty(batch, heads, length, dim), t) for t in (k, v))
        # global keys: every stride-th token in frame-major order, (B, H, G, D)
        kglob, vglob = (t[:, ::stride].transpose(1, 2) if stride else t.new_zeros(batch, heads, 0, dim)
                        for t in (k, v))
        out = _BlockSparseAttention.apply(qg, kg, vg, kglob, vglob, plan)
    result = out.new_empty(batch, length, heads, dim)
    grid6 = result.unflatten(1, (num_frames, height, width))
    for (_, h0, h1), perm, shape in zip(groups, perms, shapes):
        grid6[:, :, :, :, h0:h1].permute(perm).copy_(out[:, h0:h1].unflatten(2, shape))
    return result


class HybridWindowAttention(nn.Module):
    """Drop-in self-attention for a video token grid: `x (B, F*H*W, C) -> (B, F*H*W, C)`.

    Same parameters as the DiT's `SelfAttention` (`qkv: Linear(C, 3C)`, `proj: Linear(C, C)`), so a
    checkpoint of spatial or full 3D attention loads into it unchanged.

    Args:
        dim: channels C.
        num_heads: heads; split into groups over `orders`.
        window: sliding-window length in tokens; None = height*width of the grid of each call.
        orders: axis orders of the head groups (default the six permutations of "fhw").
        num_global_keys: about how many strided video keys every query also attends to (default 1024).
        bias: bias of the qkv projection.
        kernel: "auto" | "flex" | "blocks".
        block_size: block of the sparsity pattern.
    """

    def __init__(self, dim: int, num_heads: int, window: int | None = None, orders: Sequence[str] = ORDERS,
                 num_global_keys: int = 1024, bias: bool = True, kernel: str = "auto", block_size: int = 128):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"HybridWindowAttention: dim {dim} is not divisible by num_heads {num_heads}")
        if kernel not in KERNELS:
            raise ValueError(f"HybridWindowAttention: kernel {kernel!r} is unknown; choose one of {', '.join(KERNELS)}")
        self.dim, self.num_heads = dim, num_heads
        self.window, self.orders, self.num_global_keys = window, _check_orders(orders), num_global_keys
        self.kernel, self.block_size = kernel, block_size
        self.qkv = nn.Linear(dim, 3 * dim, bias=bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, num_frames: int | TokenGrid, height: int | None = None,
                width: int | None = None) -> torch.Tensor:
        """x: (B, F*H*W, C) tokens, frame-major then row-major -> same shape.

        The grid is given as `forward(x, num_frames, height, width)` or as one
        `forward(x, TokenGrid(F, H, W))` (the DiT blocks' form).
        """
        if isinstance(num_frames, tuple):
            if height is not None or width is not None:
                raise TypeError("HybridWindowAttention.forward: give either a TokenGrid or num_frames, height, width")
            num_frames, height, width = num_frames
        elif height is None or width is None:
            raise TypeError("HybridWindowAttention.forward needs num_frames, height and width (or one TokenGrid)")
        if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"HybridWindowAttention input has shape {tuple(getattr(x, 'shape', ()))}; expected "
                             f"(batch, frames*height*width, {self.dim})")
        if x.shape[1] != num_frames * height * width:
            raise ValueError(f"HybridWindowAttention input has {x.shape[1]} tokens, but num_frames*height*width = "
                             f"{num_frames}*{height}*{width} = {num_frames * height * width}")
        q, k, v = rearrange(self.qkv(x), "b l (three h d) -> three b l h d", three=3, h=self.num_heads).unbind(0)
        out = hybrid_window_attention(q, k, v, num_frames, height, width, window=self.window, orders=self.orders,
                                      num_global_keys=self.num_global_keys, kernel=self.kernel,
                                      block_size=self.block_size)
        return self.proj(rearrange(out, "b l h d -> b l (h d)"))

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, num_heads={self.num_heads}, window={self.window}, orders={self.orders}, "
                f"num_global_keys={self.num_global_keys}, kernel={self.kernel!r}")
