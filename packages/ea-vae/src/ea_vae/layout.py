"""The Slice VAE's tensor layout inside the network, and the per-frame operations on it.

A video is kept *frames first*, `(B, T, C, H, W)`, with every frame stored channels-last. Per-frame
operations (GroupNorm, attention, spatial resampling) then work on a `(B*T, C, H, W)` view without
copies, and a causal 3D convolution is the sum of one 2D convolution per temporal tap over
time-shifted views of the same tensor (see `ea_vae.causal_conv`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["empty_frames", "to_frames", "flat_frames", "inplace_ok", "activation", "norm_act", "pointwise_conv"]


def empty_frames(b: int, t: int, c: int, h: int, w: int, like: torch.Tensor) -> torch.Tensor:
    """An uninitialised `(B, T, C, H, W)` tensor whose frames are channels-last."""
    return torch.empty(b, t, h, w, c, dtype=like.dtype, device=like.device).permute(0, 1, 4, 2, 3)


def to_frames(x: torch.Tensor) -> torch.Tensor:
    """`(B, C, T, H, W)` -> frames-first `(B, T, C, H, W)`, channels-last per frame.

    A view when `x` already has that memory layout (`torch.channels_last_3d`, as `ea_data`'s loader
    batches do), else one copy.
    """
    if x.is_contiguous(memory_format=torch.channels_last_3d):
        return x.permute(0, 2, 1, 3, 4)
    b, c, t, h, w = x.shape
    out = empty_frames(b, t, c, h, w, x)
    out.copy_(x.permute(0, 2, 1, 3, 4))
    return out


def flat_frames(h: torch.Tensor) -> torch.Tensor:
    """`(B, T, C, H, W)` -> `(B*T, C, H, W)`; a view unless B > 1 and `h` is a time slice."""
    x = h.flatten(0, 1)
    if x.shape[0] == 1:  # a lone frame: give dim 0 a stride that keeps it recognisably channels-last
        x = x.as_strided(x.shape, (x[0].numel(), *x.stride()[1:]))
    return x


def inplace_ok(x: torch.Tensor) -> bool:
    """True when `x` may be overwritten: autograd does not need it."""
    return not (torch.is_grad_enabled() and x.requires_grad)


_ACTIVATIONS = {"silu": F.silu, "swish": F.silu, "relu": F.relu, "gelu": None, "mish": F.mish}


def activation(x: torch.Tensor, name: str) -> torch.Tensor:
    """The configured nonlinearity, in place when autograd allows it."""
    if name == "gelu":
        return F.gelu(x)
    return _ACTIVATIONS[name](x, inplace=inplace_ok(x))


def norm_act(h: torch.Tensor, norm: nn.GroupNorm, act: str | None, out: torch.Tensor | None = None) -> torch.Tensor:
    """Per-frame GroupNorm (statistics over C/groups x H x W of each frame), then `act`.

    h: `(B, T, C, H, W)` -> same shape, written into `out` if given. Per-frame statistics make the result
    independent of slicing.
    """
    y = F.group_norm(flat_frames(h), norm.num_groups, norm.weight, norm.bias, norm.eps)
    if out is None:
        return (y if act is None else activation(y, act)).unflatten(0, h.shape[:2])
    if act == "silu" and h.shape[0] == 1 and inplace_ok(y):
        torch.ops.aten.silu.out(y, out=flat_frames(out))  # no intermediate tensor
    else:
        out.copy_((y if act is None else activation(y, act)).unflatten(0, h.shape[:2]))
    return out


def pointwise_conv(conv: nn.Conv3d, h: torch.Tensor) -> torch.Tensor:
    """A 1x1x1 `nn.Conv3d` applied to frames-first `h` `(B, T, C, H, W)`."""
    y = F.conv2d(flat_frames(h), conv.weight.flatten(2).unsqueeze(-1), conv.bias)
    return y.unflatten(0, h.shape[:2])
