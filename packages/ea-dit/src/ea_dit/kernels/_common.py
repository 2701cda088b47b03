"""Small helpers shared by the Triton kernel modules: where Triton can run, and block sizes."""

from __future__ import annotations

import os

import torch


def interpreting() -> bool:
    """True when Triton runs its CPU interpreter (TRITON_INTERPRET=1, read when triton is imported)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def check_triton_device(t: torch.Tensor, what: str) -> None:
    """Raise a clear error when a Triton kernel cannot run on `t`'s device."""
    if t.is_cuda:
        return
    if t.device.type == "cpu" and interpreting():
        return
    raise RuntimeError(f"{what}: the Triton backend needs a CUDA tensor (got one on {t.device}); on the CPU "
                       "set TRITON_INTERPRET=1 before importing triton (slow, for tests) or use backend='sdpa'")


def next_pow2(n: int) -> int:
    """Smallest power of two >= n (tl.arange sizes must be powers of two)."""
    return 1 << max(0, (int(n) - 1).bit_length())
