"""Fused temporal attention with Grid Reshape folded into the kernel's indexing (Triton, fwd + bwd).

The motion module attends along time, but its tokens arrive in the spatial layout of a DiT block,
`(B*F, N, H, D)` with `N = height*width`. The plain path (`ea_dit.grid_reshape`, which defines Grid
Reshape and holds this kernel's oracle `temporal_attention_reference`) gathers every temporal sequence
with `grid_reshape`, runs attention and scatters the result back: four full copies of the activations
(q, k, v, out) plus the same again in the backward pass. Here the index map of Grid Reshape, as
defined there, lives in the kernel's pointer arithmetic instead, so q/k/v are read - and the output
and gradients written - directly in the spatial layout:

    sequence s = (b, hh, ww),  position t = (f, n, m)
    token(s, t) = frame b*F + f, spatial index (hh*g + n)*width + ww*g + m

Both maps are separable (a sequence offset plus a position offset), which also covers ordinary
attention: `(B, L, H, D)` read through a transposed view `(L, B, H, D)` is this layout with
F = L, height = 1, width = B, g = 1 (see `ea_dit.kernels.flash_attention`, which adds a key mask).

Algorithm: FlashAttention-2. The forward pass streams key tiles with an online softmax and saves the
row logsumexp; the backward pass recomputes the probabilities from it, after a preprocessing kernel
for `delta = rowsum(dO * O)`, in one kernel whose programs first accumulate dK, dV for a key tile and
then dQ for a query tile (no atomics). Work happens in base 2 (exp2, log2-scaled logits).

Sequences of any length are masked to the tile; head dims are padded to a power of two (>= 16 for
`tl.dot`) by masking; fp32 (IEEE dots), fp16 and bf16 (fp32 accumulation). Triton's CPU interpreter
computes bf16 wrongly, so there the tiles are upcast to fp32 right after loading.

A query with no key to attend to (all keys masked) yields zeros and zero gradients.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from ea_dit.grid_reshape import TokenGrid, check_tokens
from ea_dit.kernels._common import check_triton_device, interpreting, next_pow2

__all__ = ["temporal_attention_triton", "SequenceLayout", "flash_attention_core"]

LOG2E = 1.4426950408889634


# ----------------------------------------------------------------------------------------------
# Triton kernels
# ----------------------------------------------------------------------------------------------


@triton.jit
def _seq_offset(seq, frames, WIDTH, CELLS_H, CELLS_W, stride_frame, stride_token, G: tl.constexpr):
    """Element offset (int64 scalar) of position 0 of sequence `seq` = (b, hh, ww)."""
    b = seq // (CELLS_H * CELLS_W)
    hh = (seq // CELLS_W) % CELLS_H
    ww = seq % CELLS_W
    return (b * frames).to(tl.int64) * stride_frame + ((hh * WIDTH + ww) * G).to(tl.int64) * stride_token


@triton.jit
def _pos_offsets(t, WIDTH, stride_frame, stride_token, G: tl.constexpr):
    """Offsets (int32, relative to the sequence's first token) of positions `t` = (f, n, m).

    int32 keeps the pointer tiles small in registers; the wrapper checks that one sequence's span fits.
    """
    f = t // (G * G)
    n = (t // G) % G
    m = t % G
    return f * stride_frame + (n * WIDTH + m) * stride_token


@triton.jit
def _load_kv(K, V, MASK, seq, offs_n, offs_d, d_ok, T_K, WIDTH, stride_k0, stride_k1, stride_v0, stride_v1,
             stride_mask_s, stride_mask_t, G: tl.constexpr, HAS_MASK: tl.constexpr, UPCAST: tl.constexpr):
    """Key and value tiles at positions `offs_n` of one sequence, and which of them may be attended to."""
    n_ok = offs_n < T_K
    kv_mask = n_ok[:, None] & d_ok[None, :]
    k_offs = _pos_offsets(offs_n, WIDTH, stride_k0, stride_k1, G)
    v_offs = _pos_offsets(offs_n, WIDTH, stride_v0, stride_v1, G)
    k = tl.load(K + k_offs[:, None] + offs_d[None, :], mask=kv_mask, other=0.0)
    v = tl.load(V + v_offs[:, None] + offs_d[None, :], mask=kv_mask, other=0.0)
    if UPCAST:
        k = k.to(tl.float32)
        v = v.to(tl.float32)
    valid = n_ok
    if HAS_MASK:
        keep = tl.load(MASK + seq * stride_mask_s + offs_n * stride_mask_t, mask=n_ok, other=0)
        valid = valid & (keep != 0)
    return k, v, valid


@triton.jit
def _attn_fwd(
    Q, K, V, OUT, LSE, MASK,
    stride_q0, stride_q1, stride_q2,
    stride_k0, stride_k1, stride_k2,
    stride_v0, stride_v1, stride_v2,
    stride_o0, stride_o1, stride_o2,
    stride_mask_s, stride_mask_t,
    H, T_Q, T_K, FRAMES_Q, FRAMES_K, WIDTH, CELLS_H, CELLS_W, D, qk_scale,
    G: tl.constexpr, HAS_MASK: tl.constexpr, UPCAST: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    # axis 0 = (sequence, head) with heads innermost, so neighbouring programs read the same tokens
    pid_sh = tl.program_id(0)
    seq = pid_sh // H
    head = pid_sh % H
    offs_m = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    m_ok = offs_m < T_Q
    Q += _seq_offset(seq, FRAMES_Q, WIDTH, CELLS_H, CELLS_W, stride_q0, stride_q1, G) + head * stride_q2
    K += _seq_offset(seq, FRAMES_K, WIDTH, CELLS_H, CELLS_W, stride_k0, stride_k1, G) + head * stride_k2
    V += _seq_offset(seq, FRAMES_K, WIDTH, CELLS_H, CELLS_W, stride_v0, stride_v1, G) + head * stride_v2
    OUT += _seq_offset(seq, FRAMES_Q, WIDTH, CELLS_H, CELLS_W, stride_o0, stride_o1, G) + head * stride_o2

    q_offs = _pos_offsets(offs_m, WIDTH, stride_q0, stride_q1, G)
    q = tl.load(Q + q_offs[:, None] + offs_d[None, :], mask=m_ok[:, None] & d_ok[None, :],
                other=0.0)
    if UPCAST:
        q = q.to(tl.float32)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    for start_n in range(0, T_K, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        k, v, valid = _load_kv(K, V, MASK, seq, offs_n, offs_d, d_ok, T_K, WIDTH, stride_k0, stride_k1, stride_v0, stride_v1,
                            stride_mask_s, stride_mask_t, G, HAS_MASK, UPCAST)

        s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale  # log2-scaled logits
        s = tl.where(valid[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        # rows that have seen no valid key yet keep m = -inf; subtract 0 there to avoid inf - inf
        m_sub = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.math.exp2(s - m_sub[:, None])
        alpha = tl.math.exp2(m_i - m_sub)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
        m_i = m_new

    empty = l_i == 0.0
    l_div = tl.where(empty, 1.0, l_i)
    acc = acc / l_div[:, None]
    # +inf logsumexp makes the backward's recomputed probabilities exactly 0 for empty rows
    lse = tl.where(empty, float("inf"), m_i + tl.math.log2(l_div))
    tl.store(LSE + pid_sh.to(tl.int64) * T_Q + offs_m, lse, mask=m_ok)
    o_offs = _pos_offsets(offs_m, WIDTH, stride_o0, stride_o1, G)
    tl.store(OUT + o_offs[:, None] + offs_d[None, :], acc.to(OUT.dtype.element_ty),
             mask=m_ok[:, None] & d_ok[None, :])


@triton.jit
def _attn_bwd_preprocess(
    OUT, DO, DELTA,
    stride_o0, stride_o1, stride_o2,
    stride_do0, stride_do1, stride_do2,
    H, T_Q, FRAMES_Q, WIDTH, CELLS_H, CELLS_W, D,
    G: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """delta = rowsum(dO * O), one value per query row, fp32."""
    pid_sh = tl.program_id(0)
    seq = pid_sh // H
    head = pid_sh % H
    offs_m = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    m_ok = offs_m < T_Q
    mask = m_ok[:, None] & (offs_d < D)[None, :]
    OUT += _seq_offset(seq, FRAMES_Q, WIDTH, CELLS_H, CELLS_W, stride_o0, stride_o1, G) + head * stride_o2
    DO += _seq_offset(seq, FRAMES_Q, WIDTH, CELLS_H, CELLS_W, stride_do0, stride_do1, G) + head * stride_do2
    o_offs = _pos_offsets(offs_m, WIDTH, stride_o0, stride_o1, G)
    do_offs = _pos_offsets(offs_m, WIDTH, stride_do0, stride_do1, G)
    o = tl.load(OUT + o_offs[:, None] + offs_d[None, :], mask=mask, other=0.0).to(tl.float32)
    do = tl.load(DO + do_offs[:, None] + offs_d[None, :], mask=mask, other=0.0).to(tl.float32)
    tl.store(DELTA + pid_sh.to(tl.int64) * T_Q + offs_m, tl.sum(o * do, 1), mask=m_ok)


@triton.jit
def _attn_bwd(
    Q, K, V, DO, DQ, DK, DV, LSE, DELTA, MASK,
    stride_q0, stride_q1, stride_q2,
    stride_k0, stride_k1, stride_k2,
    stride_v0, stride_v1, stride_v2,
    stride_do0, stride_do1, stride_do2,
    stride_dq0, stride_dq1, stride_dq2,
    stride_dk0, stride_dk1, stride_dk2,
    stride_dv0, stride_dv1, stride_dv2,
    stride_mask_s, stride_mask_t,
    H, T_Q, T_K, FRAMES_Q, FRAMES_K, WIDTH, CELLS_H, CELLS_W, D, qk_scale, sm_scale,
    G: tl.constexpr, HAS_MASK: tl.constexpr, UPCAST: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """Program (s*H + h, i): dK, dV of key tile i, then dQ of query tile i (whichever exist)."""
    pid_sh = tl.program_id(0)
    pid_t = tl.program_id(1)
    seq = pid_sh // H
    head = pid_sh % H
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    row_base = pid_sh.to(tl.int64) * T_Q
    Q += _seq_offset(seq, FRAMES_Q, WIDTH, CELLS_H, CELLS_W, stride_q0, stride_q1, G) + head * stride_q2
    K += _seq_offset(seq, FRAMES_K, WIDTH, CELLS_H, CELLS_W, stride_k0, stride_k1, G) + head * stride_k2
    V += _seq_offset(seq, FRAMES_K, WIDTH, CELLS_H, CELLS_W, stride_v0, stride_v1, G) + head * stride_v2
    DO += _seq_offset(seq, FRAMES_Q, WIDTH, CELLS_H, CELLS_W, stride_do0, stride_do1, G) + head * stride_do2
    DQ += _seq_offset(seq, FRAMES_Q, WIDTH, CELLS_H, CELLS_W, stride_dq0, stride_dq1, G) + head * stride_dq2
    DK += _seq_offset(seq, FRAMES_K, WIDTH, CELLS_H, CELLS_W, stride_dk0, stride_dk1, G) + head * stride_dk2
    DV += _seq_offset(seq, FRAMES_K, WIDTH, CELLS_H, CELLS_W, stride_dv0, stride_dv1, G) + head * stride_dv2

    # ---- phase 1: dK, dV for keys [pid_t*BLOCK_N, +BLOCK_N), looping over all queries
    if pid_t * BLOCK_N < T_K:
        offs_n = pid_t * BLOCK_N + tl.arange(0, BLOCK_N)
        k, v, valid_n = _load_kv(K, V, MASK, seq, offs_n, offs_d, d_ok, T_K, WIDTH, stride_k0, stride_k1, stride_v0, stride_v1,
                              stride_mask_s, stride_mask_t, G, HAS_MASK, UPCAST)
        dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
        dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
        for start_m in range(0, T_Q, BLOCK_M):
            offs_m = start_m + tl.arange(0, BLOCK_M)
            m_ok = offs_m < T_Q
            q_mask = m_ok[:, None] & d_ok[None, :]
            q_offs = _pos_offsets(offs_m, WIDTH, stride_q0, stride_q1, G)
            do_offs = _pos_offsets(offs_m, WIDTH, stride_do0, stride_do1, G)
            q = tl.load(Q + q_offs[:, None] + offs_d[None, :], mask=q_mask, other=0.0)
            do = tl.load(DO + do_offs[:, None] + offs_d[None, :], mask=q_mask, other=0.0)
            if UPCAST:
                q = q.to(tl.float32)
                do = do.to(tl.float32)
            lse = tl.load(LSE + row_base + offs_m, mask=m_ok, other=float("inf"))
            delta = tl.load(DELTA + row_base + offs_m, mask=m_ok, other=0.0)
            # transposed tiles (keys x queries) so the sums over queries are plain dots
            s_t = tl.dot(k, tl.trans(q), input_precision=DOT_PRECISION) * qk_scale
            p_t = tl.math.exp2(s_t - lse[None, :])
            p_t = tl.where(valid_n[:, None] & m_ok[None, :], p_t, 0.0)
            dv += tl.dot(p_t.to(do.dtype), do, input_precision=DOT_PRECISION)
            dp_t = tl.dot(v, tl.trans(do), input_precision=DOT_PRECISION)
            ds_t = p_t * (dp_t - delta[None, :])
            dk += tl.dot(ds_t.to(q.dtype), q, input_precision=DOT_PRECISION)
        dk *= sm_scale
        kv_mask = (offs_n < T_K)[:, None] & d_ok[None, :]
        dk_offs = _pos_offsets(offs_n, WIDTH, stride_dk0, stride_dk1, G)
        dv_offs = _pos_offsets(offs_n, WIDTH, stride_dv0, stride_dv1, G)
        tl.store(DK + dk_offs[:, None] + offs_d[None, :], dk.to(DK.dtype.element_ty),
                 mask=kv_mask)
        tl.store(DV + dv_offs[:, None] + offs_d[None, :], dv.to(DV.dtype.element_ty),
                 mask=kv_mask)

    # ---- phase 2: dQ for queries [pid_t*BLOCK_M, +BLOCK_M), looping over all keys
    if pid_t * BLOCK_M < T_Q:
        offs_m = pid_t * BLOCK_M + tl.arange(0, BLOCK_M)
        m_ok = offs_m < T_Q
        q_mask = m_ok[:, None] & d_ok[None, :]
        q_offs = _pos_offsets(offs_m, WIDTH, stride_q0, stride_q1, G)
        do_offs = _pos_offsets(offs_m, WIDTH, stride_do0, stride_do1, G)
        q = tl.load(Q + q_offs[:, None] + offs_d[None, :], mask=q_mask, other=0.0)
        do = tl.load(DO + do_offs[:, None] + offs_d[None, :], mask=q_mask, other=0.0)
        if UPCAST:
            q = q.to(tl.float32)
            do = do.to(tl.float32)
        lse = tl.load(LSE + row_base + offs_m, mask=m_ok, other=float("inf"))
        delta = tl.load(DELTA + row_base + offs_m, mask=m_ok, other=0.0)
        dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
        for start_n in range(0, T_K, BLOCK_N):
            offs_n = start_n + tl.arange(0, BLOCK_N)
            k, v, valid = _load_kv(K, V, MASK, seq, offs_n, offs_d, d_ok, T_K, WIDTH, stride_k0, stride_k1, stride_v0, stride_v1,
                                stride_mask_s, stride_mask_t, G, HAS_MASK, UPCAST)
            s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale
            p = tl.math.exp2(s - lse[:, None])
            p = tl.where(valid[None, :] & m_ok[:, None], p, 0.0)
            dp = tl.dot(do, tl.trans(v), input_precision=DOT_PRECISION)
            ds = p * (dp - delta[:, None])
            dq += tl.dot(ds.to(k.dtype), k, input_precision=DOT_PRECISION)
        dq *= sm_scale
        dq_offs = _pos_offsets(offs_m, WIDTH, stride_dq0, stride_dq1, G)
        tl.store(DQ + dq_offs[:, None] + offs_d[None, :], dq.to(DQ.dtype.element_ty),
                 mask=q_mask)


# GPU launch configurations, (BLOCK_M, BLOCK_N, num_warps) per padded head dim. Chosen from an
# ahead-of-time compile sweep for sm_90 (bf16; ptxas register/stack report): these compile without
# register spills, except where noted; larger tiles spill heavily at head dim 144 -> 256.
# Temporal sequences are short (F*g*g = 64 .. 196), so small query tiles also keep programs in flight.
_FWD_TILES = {
    128: ((64, 64, 8), (128, 64, 8), (128, 32, 8), (64, 32, 4), (32, 32, 4)),
    256: ((32, 32, 8), (64, 32, 8), (32, 64, 8)),
}
_BWD_TILES = {
    128: ((32, 32, 8), (64, 32, 8), (32, 64, 8), (32, 32, 4)),
    256: ((32, 32, 8), (16, 32, 4), (32, 16, 4), (64, 32, 8)),  # only 32x32x8 is spill-free at 256
}
_FWD_STAGES = (2, 3)
_BWD_STAGES = (1, 2)


def _configs(tiles: dict, stages: tuple) -> list:
    unique = sorted({tile for group in tiles.values() for tile in group})
    return [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=st)
            for bm, bn, w in unique for st in stages]


def _pruner(tiles: dict):
    def prune(configs, named_args, **kwargs):
        """Keep the configs of this head-dim bucket whose query tile is not longer than the sequence."""
        block_d = kwargs["BLOCK_D"]
        allowed = set(tiles[128 if block_d <= 128 else 256])
        longest = max(16, next_pow2(named_args["T_Q"]))
        kept = [c for c in configs if (c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps) in allowed]
        short = [c for c in kept if c.kwargs["BLOCK_M"] <= longest]
        return short or kept or configs

    return prune


_AUTOTUNE_KEY = ["T_Q", "T_K", "G", "HAS_MASK", "BLOCK_D"]
_attn_fwd_tuned = triton.autotune(_configs(_FWD_TILES, _FWD_STAGES), key=_AUTOTUNE_KEY,
                                  prune_configs_by={"early_config_prune": _pruner(_FWD_TILES)})(_attn_fwd)
_attn_bwd_tuned = triton.autotune(_configs(_BWD_TILES, _BWD_STAGES), key=_AUTOTUNE_KEY,
                                  prune_configs_by={"early_config_prune": _pruner(_BWD_TILES)})(_attn_bwd)

# Interpreter (CPU) tiles: the smallest tl.dot-able size keeps tests on tiny shapes multi-tile.
_INTERPRET_BLOCK = 16


# ----------------------------------------------------------------------------------------------
# autograd wrapper
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SequenceLayout:
    """The attention sequences the kernel reads from a `(frames*B, N, H, D)` tensor of a :class:`TokenGrid`.

    Sequence s = (b, hh, ww) over `batch x cells_h x cells_w`; position t = (f, n, m) over
    `frames x grid x grid`; the token sits at frame `b*frames + f`, spatial index
    `(hh*grid + n)*width + ww*grid + m` (Grid Reshape's index map). Queries have `tokens.num_frames`
    frames; keys may have a different count, `frames_k`.
    """

    tokens: TokenGrid  # token grid of the queries
    frames_k: int
    grid: int
    batch: int

    @property
    def frames_q(self) -> int:
        return self.tokens.num_frames

    @property
    def width(self) -> int:
        return self.tokens.width

    @property
    def cells_h(self) -> int:
        return self.tokens.height // self.grid

    @property
    def cells_w(self) -> int:
        return self.tokens.width // self.grid

    @property
    def num_seq(self) -> int:
        return self.batch * self.cells_h * self.cells_w

    @property
    def len_q(self) -> int:
        return self.frames_q * self.grid * self.grid

    @property
    def len_k(self) -> int:
        return self.frames_k * self.grid * self.grid


def _last_dim_contiguous(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


def _strides(t: torch.Tensor) -> tuple[int, int, int]:
    return t.stride(0), t.stride(1), t.stride(2)


def _check_int32_span(t: torch.Tensor, frames: int, layout: SequenceLayout, name: str) -> None:
    """Offsets inside one sequence are int32 in the kernels (sequence bases are int64)."""
    g = layout.grid
    span = (frames - 1) * abs(t.stride(0)) + ((g - 1) * layout.width + g - 1) * abs(t.stride(1)) + t.shape[3]
    if span >= 2**31:
        raise ValueError(f"Triton attention: one sequence of {name} spans {span} elements of memory (shape "
                         f"{tuple(t.shape)}, strides {t.stride()}); the kernel needs < 2**31 - use backend='sdpa'")


def _launch_options(dtype: torch.dtype) -> dict:
    return {
        "UPCAST": interpreting() and dtype == torch.bfloat16,
        "DOT_PRECISION": "ieee" if dtype == torch.float32 else None,
    }


def _layout_args(layout: SequenceLayout, heads: int, head_dim: int) -> tuple:
    return (heads, layout.len_q, layout.len_k, layout.frames_q, layout.frames_k, layout.width, layout.cells_h,
            layout.cells_w, head_dim)


def _mask_args(mask: torch.Tensor | None, fallback: torch.Tensor):
    if mask is None:
        return fallback, 0, 0
    return mask, mask.stride(0), mask.stride(1)


class _FlashAttention(torch.autograd.Function):
    """Attention over the sequences of a :class:`SequenceLayout`; tensors are (frames*B, N, H, D) views."""

    @staticmethod
    def forward(ctx, q, k, v, key_mask, layout: SequenceLayout):
        q, k, v = (_last_dim_contiguous(t) for t in (q, k, v))
        for t, frames, name in ((q, layout.frames_q, "q"), (k, layout.frames_k, "k"), (v, layout.frames_k, "v")):
            _check_int32_span(t, frames, layout, name)
        heads, head_dim = q.shape[2], q.shape[3]
        sm_scale = head_dim ** -0.5
        block_d = max(16, next_pow2(head_dim))
        o = torch.empty_like(q)
        if o.stride(-1) != 1:
            o = torch.empty(q.shape, dtype=q.dtype, device=q.device)
        lse = torch.empty(layout.num_seq * heads, layout.len_q, dtype=torch.float32, device=q.device)
        mask, mask_s, mask_t = _mask_args(key_mask, q)
        args = (q, k, v, o, lse, mask, *_strides(q), *_strides(k), *_strides(v), *_strides(o), mask_s, mask_t,
                *_layout_args(layout, heads, head_dim), sm_scale * LOG2E)
        meta = dict(G=layout.grid, HAS_MASK=key_mask is not None, BLOCK_D=block_d, **_launch_options(q.dtype))
        rows = layout.num_seq * heads
        if rows and layout.len_q:
            if interpreting():
                launch_grid = (rows, triton.cdiv(layout.len_q, _INTERPRET_BLOCK))
                _attn_fwd[launch_grid](*args, **meta, BLOCK_M=_INTERPRET_BLOCK, BLOCK_N=_INTERPRET_BLOCK)
            else:
                _attn_fwd_tuned[lambda m: (rows, triton.cdiv(layout.len_q, m["BLOCK_M"]))](*args, **meta)
        ctx.save_for_backward(q, k, v, o, lse, key_mask)
        ctx.layout = layout
        ctx.sm_scale = sm_scale
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse, key_mask = ctx.saved_tensors
        layout: SequenceLayout = ctx.layout
        do = _last_dim_contiguous(do)
        _check_int32_span(do, layout.frames_q, layout, "the output gradient")
        heads, head_dim = q.shape[2], q.shape[3]
        block_d = max(16, next_pow2(head_dim))
        rows = layout.num_seq * heads
        dq, dk, dv = (torch.empty(t.shape, dtype=t.dtype, device=t.device) for t in (q, k, v))
        if rows == 0 or layout.len_q == 0:
            return dq.zero_(), dk.zero_(), dv.zero_(), None, None
        delta = torch.empty_like(lse)
        pre_block = _INTERPRET_BLOCK if interpreting() else 64
        _attn_bwd_preprocess[(rows, triton.cdiv(layout.len_q, pre_block))](
            o, do, delta, *_strides(o), *_strides(do), heads, layout.len_q, layout.frames_q, layout.width,
            layout.cells_h, layout.cells_w, head_dim, G=layout.grid, BLOCK_M=pre_block, BLOCK_D=block_d,
        )
        mask, mask_s, mask_t = _mask_args(key_mask, q)
        args = (q, k, v, do, dq, dk, dv, lse, delta, mask, *_strides(q), *_strides(k), *_strides(v), *_strides(do),
                *_strides(dq), *_strides(dk), *_strides(dv), mask_s, mask_t, *_layout_args(layout, heads, head_dim),
                ctx.sm_scale * LOG2E, ctx.sm_scale)
        meta = dict(G=layout.grid, HAS_MASK=key_mask is not None, BLOCK_D=block_d, **_launch_options(q.dtype))

        def tiles(m):
            return (rows, max(triton.cdiv(layout.len_q, m["BLOCK_M"]), triton.cdiv(layout.len_k, m["BLOCK_N"])))

        if interpreting():
            block = {"BLOCK_M": _INTERPRET_BLOCK, "BLOCK_N": _INTERPRET_BLOCK}
            _attn_bwd[tiles(block)](*args, **meta, **block)
        else:
            _attn_bwd_tuned[tiles](*args, **meta)
        return dq, dk, dv, None, None


def flash_attention_core(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None,
                         layout: SequenceLayout) -> torch.Tensor:
    """Differentiable Triton attention over the sequences `layout` describes.

    Args:
        q: (frames_q*B, N, H, D) view (any strides), k, v: (frames_k*B, N, H, D).
        key_mask: None, or a uint8/bool tensor indexed [sequence, key position] (True/1 = attend).
        layout: the (sequence, position) -> token map.

    Returns:
        The output in q's shape.
    """
    check_triton_device(q, "Triton attention")
    if key_mask is not None and key_mask.dtype == torch.bool:
        key_mask = key_mask.view(torch.uint8)
    return _FlashAttention.apply(q, k, v, key_mask, layout)


@torch.compiler.disable
def temporal_attention_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, tokens: TokenGrid,
                              grid: int = 2) -> torch.Tensor:
    """Fused temporal attention with Grid Reshape folded in; no copy of q/k/v or of the output.

    Args:
        q, k, v: (B*F, height*width, H, D) in the spatial token layout, fp32/fp16/bf16, CUDA (or the CPU
            with TRITON_INTERPRET=1).
        tokens: the token grid (F, height, width); height and width divisible by `grid`.
        grid: Grid Reshape cell size (1 = per-token temporal attention).

    Returns:
        (B*F, height*width, H, D), attention over each cell's F*grid*grid tokens, scale 1/sqrt(D).
    """
    if q.shape != k.shape or k.shape != v.shape:
        raise ValueError(f"temporal_attention_triton: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)} "
                         "must have the same shape")
    if q.dim() != 4:
        raise ValueError(f"temporal_attention_triton: q has shape {tuple(q.shape)}; expected (B*F, N, H, D)")
    if not (q.dtype == k.dtype == v.dtype) or q.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f"temporal_attention_triton: q, k, v dtypes ({q.dtype}, {k.dtype}, {v.dtype}) must be one of "
                        "float32, float16, bfloat16")
    tokens = TokenGrid(*tokens)
    check_tokens(q, tokens, grid, "temporal_attention_triton q")
    layout = SequenceLayout(tokens, frames_k=tokens.num_frames, grid=grid, batch=q.shape[0] // tokens.num_frames)
    return flash_attention_core(q, k, v, None, layout)
