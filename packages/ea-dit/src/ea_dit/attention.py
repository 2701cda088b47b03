"""Attention backends of the video DiT: PyTorch SDPA, xformers and Triton.

Two entry points, both in the `(batch, tokens, heads, head_dim)` layout of the DiT's projections:

- :func:`attention` - generic multi-head attention (spatial self-attention, cross-attention to the
  T5 tokens with a key-padding mask).
- :func:`temporal_attention` - the motion module's temporal self-attention, taking q/k/v in the
  *spatial* token layout `(B*F, N, H, D)` and attending along time with Grid Reshape (defined in
  `ea_dit.grid_reshape`): each temporal sequence is the `F*g*g` tokens of one `g x g` spatial cell.

`backend="sdpa"` (default, works on the CPU) and `"xformers"` make the Grid Reshape copies explicitly;
`"triton"` folds the reshape into the kernel's indexing (see `ea_dit.kernels.temporal_attention`).

A query whose keys are all masked out gets a zero output (and zero gradients) in every backend,
instead of the NaN a plain softmax over an empty set would give.

The kernel modules (which import triton) are imported only when backend="triton" is used: the plain
path never needs Triton, and TRITON_INTERPRET may be set after `import ea_dit`. `attention_reference`
and `ea_dit.grid_reshape.temporal_attention_reference` are the fp32 oracles of every backend.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ea_dit.grid_reshape import TokenGrid, check_tokens, grid_reshape, grid_unreshape

BACKENDS = ("sdpa", "xformers", "triton")

__all__ = ["BACKENDS", "attention", "attention_reference", "temporal_attention"]


# ----------------------------------------------------------------------------------------------
# input checks
# ----------------------------------------------------------------------------------------------


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"attention backend {backend!r} is unknown; choose one of {', '.join(BACKENDS)}")


def _check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, what: str) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{what}: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{what}: {name} has shape {tuple(t.shape)}; expected 4 dims (batch, tokens, "
                             "heads, head_dim)")
        if not t.is_floating_point():
            raise TypeError(f"{what}: {name} has dtype {t.dtype}; expected a floating-point tensor")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"{what}: q, k, v dtypes differ ({q.dtype}, {k.dtype}, {v.dtype}); cast them to one dtype")
    if not (q.device == k.device == v.device):
        raise ValueError(f"{what}: q, k, v are on different devices ({q.device}, {k.device}, {v.device})")
    if k.shape != v.shape:
        raise ValueError(f"{what}: k {tuple(k.shape)} and v {tuple(v.shape)} must have the same shape")
    if q.shape[0] != k.shape[0] or q.shape[2] != k.shape[2] or q.shape[3] != k.shape[3]:
        raise ValueError(f"{what}: q {tuple(q.shape)} and k {tuple(k.shape)} must agree in batch, heads and "
                         "head_dim (dims 0, 2, 3)")


def _check_key_mask(key_mask: torch.Tensor | None, k: torch.Tensor) -> None:
    if key_mask is None:
        return
    if key_mask.dtype != torch.bool:
        raise TypeError(f"key_mask has dtype {key_mask.dtype}; expected torch.bool (True = attend)")
    if tuple(key_mask.shape) != (k.shape[0], k.shape[1]):
        raise ValueError(f"key_mask has shape {tuple(key_mask.shape)}; expected (batch, key_tokens) = "
                         f"({k.shape[0]}, {k.shape[1]})")
    if key_mask.device != k.device:
        raise ValueError(f"key_mask is on {key_mask.device} but k is on {k.device}")


# ----------------------------------------------------------------------------------------------
# generic attention
# ----------------------------------------------------------------------------------------------


def _safe_mask(key_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Let fully padded rows attend everywhere (no NaN), and return which rows must be zeroed after."""
    empty = ~key_mask.any(dim=1)  # (B,)
    return key_mask | empty[:, None], empty


def attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                        key_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax attention in fp32 (the test oracle); queries with no key to attend to get zeros.

    Args:
        q: (B, Lq, H, D); k, v: (B, Lk, H, D); key_mask: (B, Lk) bool (True = attend) or None.

    Returns:
        (B, Lq, H, D) in q's dtype.
    """
    scores = torch.einsum("bqhd,bkhd->bhqk", q.float(), k.float()) / math.sqrt(q.shape[-1])
    if key_mask is not None:
        empty = ~key_mask.any(dim=1)
        # let empty rows see every key (finite softmax, clean gradients), then zero their output
        attend = key_mask | empty[:, None]
        scores = scores.masked_fill(~attend[:, None, None, :], float("-inf"))
    out = torch.einsum("bhqk,bkhd->bqhd", scores.softmax(dim=-1), v.float())
    if key_mask is not None:
        out = out.masked_fill(empty[:, None, None, None], 0.0)
    return out.to(q.dtype)


def _sdpa(q, k, v, key_mask):
    # SDPA works in (B, H, L, D)
    qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))
    if key_mask is None:
        return F.scaled_dot_product_attention(qt, kt, vt).transpose(1, 2)
    mask, empty = _safe_mask(key_mask)
    out = F.scaled_dot_product_attention(qt, kt, vt, attn_mask=mask[:, None, None, :]).transpose(1, 2)
    return out.masked_fill(empty[:, None, None, None], 0.0)


def _import_xformers_ops():
    try:
        import xformers.ops as xops
    except ImportError as err:
        raise ImportError("attention backend 'xformers' needs the xformers package, which is not installed; "
                          "install the optional extra with `uv sync --extra xformers` (it pins torch 2.10), "
                          "or use backend='sdpa' or 'triton'") from err
    return xops


def _xformers(q, k, v, key_mask):
    xops = _import_xformers_ops()
    if key_mask is None:
        return xops.memory_efficient_attention(q, k, v)
    mask, empty = _safe_mask(key_mask)
    b, lq, h, _ = q.shape
    lk = k.shape[1]
    # xformers wants the bias's last dim 8-aligned in memory: allocate padded, then slice
    padded = (lk + 7) // 8 * 8
    bias = torch.zeros(b, h, lq, padded, dtype=q.dtype, device=q.device)[..., :lk]
    bias.masked_fill_(~mask[:, None, None, :], float("-inf"))
    out = xops.memory_efficient_attention(q, k, v, attn_bias=bias)
    return out.masked_fill(empty[:, None, None, None], 0.0)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None = None,
              backend: str = "sdpa") -> torch.Tensor:
    """Multi-head scaled-dot-product attention with an optional key-padding mask.

    Args:
        q: (B, Lq, H, D) queries.
        k, v: (B, Lk, H, D) keys and values.
        key_mask: (B, Lk) bool, True = attend to this key; None attends to every key. Queries of a
            batch entry with no key to attend to get zeros.
        backend: "sdpa" (torch, any device), "xformers" (CUDA, optional extra) or "triton"
            (CUDA, or the CPU under TRITON_INTERPRET=1).

    Returns:
        (B, Lq, H, D) in the dtype of q, softmax scale 1/sqrt(D).
    """
    _check_backend(backend)
    _check_qkv(q, k, v, "attention")
    _check_key_mask(key_mask, k)
    if backend == "sdpa":
        return _sdpa(q, k, v, key_mask)
    if backend == "xformers":
        return _xformers(q, k, v, key_mask)
    from ea_dit.kernels.flash_attention import flash_attention

    return flash_attention(q, k, v, key_mask)


# ----------------------------------------------------------------------------------------------
# temporal attention with Grid Reshape
# ----------------------------------------------------------------------------------------------


def temporal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, tokens: TokenGrid, grid: int = 2,
                       backend: str = "sdpa") -> torch.Tensor:
    """Temporal self-attention over Grid Reshape sequences, in the spatial token layout.

    Args:
        q, k, v: (B*F, N, H, D), N = height*width tokens per frame (row-major h, w). Each temporal
            sequence is the F*grid*grid tokens of one grid x grid spatial cell, ordered (f n m); see
            `ea_dit.grid_reshape`.
        tokens: the token grid (F, height, width); height and width divisible by `grid`.
        grid: Grid Reshape cell size; 1 = plain per-token temporal attention.
        backend: "sdpa", "xformers" (both copy through `grid_reshape`) or "triton" (reshape folded into
            the kernel, no copies).

    Returns:
        (B*F, N, H, D) in the same spatial layout.
    """
    _check_backend(backend)
    _check_qkv(q, k, v, "temporal_attention")
    if q.shape != k.shape:
        raise ValueError(f"temporal_attention: q {tuple(q.shape)} and k {tuple(k.shape)} must have the same shape")
    tokens = TokenGrid(*tokens)
    check_tokens(q, tokens, grid, "temporal_attention q")
    if backend == "triton":
        from ea_dit.kernels.temporal_attention import temporal_attention_triton

        return temporal_attention_triton(q, k, v, tokens, grid)
    qs, ks, vs = (grid_reshape(t, tokens, grid) for t in (q, k, v))
    out = _sdpa(qs, ks, vs, None) if backend == "sdpa" else _xformers(qs, ks, vs, None)
    return grid_unreshape(out, tokens, grid)
