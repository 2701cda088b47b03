"""Streaming state of the Slice VAE: what one temporal slice hands to the next, and recycled scratch memory.

Every layer that looks at earlier frames takes a :class:`StreamCache`. A causal convolution stores its
last input frames there, a temporal upsampler remembers that it has emitted frame 0, so feeding a
video slice by slice through the same cache gives exactly the output of one pass over the whole video.
A :class:`Workspace` lets the slices and tiles of one encode/decode call reuse one block of scratch
memory and the weights derived for the inference fast paths (`ea_vae.causal_conv_fast`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .layout import empty_frames

__all__ = ["Workspace", "StreamCache"]


class Workspace:
    """Scratch memory that the temporal slices (and tiles) of one encode/decode call hand on to each other.

    Padded convolution inputs are carved out of one recycled block: a layer takes it, its convolution
    runs, and it is given back for the next layer or slice, so slices do not allocate fresh (on the CPU:
    zero-filled, page-faulting) memory for every layer. Only the largest block seen is kept, so this adds
    at most one padded input of one slice to memory. Not used while autograd records (a buffer saved for
    backward must not be overwritten).
    """

    def __init__(self):
        self.block: torch.Tensor | None = None  # the free block (1-D), if any
        self.lent: dict[int, torch.Tensor] = {}  # blocks handed out, by data pointer
        self.derived: dict[nn.Module, tuple[torch.Tensor, ...]] = {}

    def frames(self, b: int, t: int, c: int, h: int, w: int, like: torch.Tensor) -> torch.Tensor:
        """Like `empty_frames`, carved out of the recycled block when it is free and large enough."""
        if torch.is_grad_enabled():
            return empty_frames(b, t, c, h, w, like)
        blk, n = self.block, b * t * h * w * c
        if blk is None or blk.numel() < n or blk.dtype != like.dtype or blk.device != like.device:
            blk = torch.empty(n, dtype=like.dtype, device=like.device)
        else:
            self.block = None
        self.lent[blk.data_ptr()] = blk
        return blk[:n].view(b, t, h, w, c).permute(0, 1, 4, 2, 3)

    def give(self, x: torch.Tensor) -> None:
        """Hand back a buffer from `frames` that nothing reads any more (kept if it is the largest free one)."""
        blk = self.lent.pop(x.data_ptr(), None)
        if blk is not None and (self.block is None or blk.numel() > self.block.numel()):
            self.block = blk

    #: derived weights larger than this are recomputed for every slice rather than held for the whole call
    #: (holding the released model's 512-channel upsampler folds would add ~100 MiB to a slice's peak)
    max_derived_bytes = 16 * 2**20

    def weights_of(self, module: nn.Module, make: Callable[[], tuple[torch.Tensor, ...]]) -> tuple[torch.Tensor, ...]:
        """`make()` (weights derived from `module`'s, e.g. folded kernels), computed once per call and shared by
        its slices and tiles when small; recomputed every time while autograd records or when large."""
        if module in self.derived:
            return self.derived[module]
        made = make()
        if not torch.is_grad_enabled() and sum(t.numel() * t.element_size() for t in made) <= self.max_derived_bytes:
            self.derived[module] = made
        return made


class StreamCache:
    """What one temporal slice hands to the next: the last input frames of every causal convolution and
    whether each temporal upsampler has already emitted frame 0 of the video.

    A fresh cache means "this slice starts the video" (causal convolutions replicate the first frame into
    the past; upsamplers keep frame 0 alone). `continuing=True` starts a slice from the middle of a video
    without carried frames (the feature-sharing scheme): convolutions still replicate-pad, but upsamplers
    treat every frame as a later frame. `workspace`, if given, recycles scratch buffers between slices.
    """

    def __init__(self, continuing: bool = False, workspace: Workspace | None = None):
        self.past: dict[nn.Module, torch.Tensor] = {}
        self.started: set[nn.Module] = set()
        self.continuing = continuing
        self.workspace = workspace

    def buffer(self, b: int, t: int, c: int, h: int, w: int, like: torch.Tensor) -> torch.Tensor:
        """An uninitialised frames-first `(B, T, C, H, W)` buffer (from the workspace if there is one)."""
        if self.workspace is None:
            return empty_frames(b, t, c, h, w, like)
        return self.workspace.frames(b, t, c, h, w, like)

    def release(self, x: torch.Tensor) -> None:
        """Give a buffer from `buffer` back once nothing reads it."""
        if self.workspace is not None:
            self.workspace.give(x)
