"""Generic multi-head attention with a key-padding mask on the Triton flash-attention core.

The "triton" backend of `ea_dit.attention.attention` (spatial self-attention, cross-attention to the
text tokens). It reuses the kernels of `ea_dit.kernels.temporal_attention`: a `(B, L, H, D)` tensor
read through its transposed view `(L, B, H, D)` is the temporal layout with L "frames", a 1 x B token
grid and grid 1, so sequence b is exactly batch entry b - no copy, no second kernel.
"""

from __future__ import annotations

import math

import torch

from ea_dit.kernels.temporal_attention import TokenLayout, flash_attention_core

__all__ = ["flash_attention", "attention_reference"]


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


@torch.compiler.disable
def flash_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                    key_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Triton flash attention (forward + backward) with an optional key-padding mask.

    Args:
        q: (B, Lq, H, D); k, v: (B, Lk, H, D); fp32, fp16 or bf16 on CUDA (or the CPU under
            TRITON_INTERPRET=1); any strides.
        key_mask: (B, Lk) bool, True = attend, or None.

    Returns:
        (B, Lq, H, D), scale 1/sqrt(D); queries of a batch entry with no valid key get zeros.
    """
    if q.dim() != 4 or k.dim() != 4 or k.shape != v.shape or q.shape[0] != k.shape[0] or q.shape[2:] != k.shape[2:]:
        raise ValueError(f"flash_attention: expected q (B, Lq, H, D) and k, v (B, Lk, H, D); got q {tuple(q.shape)}, "
                         f"k {tuple(k.shape)}, v {tuple(v.shape)}")
    if not (q.dtype == k.dtype == v.dtype) or q.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f"flash_attention: q, k, v dtypes ({q.dtype}, {k.dtype}, {v.dtype}) must be one of float32, "
                        "float16, bfloat16")
    batch, len_q = q.shape[:2]
    len_k = k.shape[1]
    if key_mask is not None and tuple(key_mask.shape) != (batch, len_k):
        raise ValueError(f"flash_attention: key_mask has shape {tuple(key_mask.shape)}; expected ({batch}, {len_k})")
    layout = TokenLayout(frames_q=len_q, frames_k=len_k, width=batch, cells_h=1, cells_w=batch, grid=1,
                         num_seq=batch)
    out = flash_attention_core(q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), key_mask, layout)
    return out.transpose(0, 1)
