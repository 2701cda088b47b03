"""Generic multi-head attention with a key-padding mask on the Triton flash-attention core.

The "triton" backend of `ea_dit.attention.attention` (spatial self-attention, cross-attention to the
text tokens). It reuses the kernels of `ea_dit.kernels.temporal_attention`: a `(B, L, H, D)` tensor
read through its transposed view `(L, B, H, D)` is the temporal layout with L "frames", a 1 x B token
grid and grid 1, so sequence b is exactly batch entry b - no copy, no second kernel. Its oracle is
`ea_dit.attention.attention_reference`.
"""

from __future__ import annotations

import torch

from ea_dit.grid_reshape import TokenGrid
from ea_dit.kernels.temporal_attention import SequenceLayout, flash_attention_core

__all__ = ["flash_attention"]


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
    layout = SequenceLayout(TokenGrid(len_q, 1, batch), frames_k=len_k, grid=1, batch=1)
    out = flash_attention_core(q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), key_mask, layout)
    return out.transpose(0, 1)
