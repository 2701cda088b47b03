"""Fast paths of `CausalConv3d` (`ea_vae.causal_conv`): the same function, less memory traffic.

- :func:`conv_normed`: `conv(norm_act(h))` with the normalised input written straight into the
  convolution's padded buffer (no separate normalised tensor); used in training and inference.
- :func:`conv_time_doubled`: inference only. After a temporal upsampler every frame is repeated
  (nearest), so a kt = 3 convolution over the doubled frames equals a 2-tap convolution over the
  distinct frames with :func:`pair_kernels` (2/3 of the multiply-adds, norm on half the frames).

Both are tested against the plain `CausalConv3d.forward` on the normalised (doubled) input. The
scratch buffers and derived kernels come from the cache's `Workspace` when the call has one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .causal_conv import CausalConv3d
from .layout import empty_frames, flat_frames, norm_act
from .stream import StreamCache

__all__ = ["conv_normed", "conv_time_doubled", "pair_kernels"]


def conv_normed(conv: CausalConv3d, h: torch.Tensor, norm: nn.GroupNorm, act: str, cache: StreamCache) -> torch.Tensor:
    """`conv(norm_act(h, norm, act), cache)`, writing the normalised input straight into the padded buffer.

    h: `(B, T, C_in, H, W)` -> `(B, T', C_out, H', W')`.
    """
    lead = conv.lead_frames(cache)
    b, t, c, hh, ww = h.shape
    hp = cache.buffer(b, lead + t, c, hh, ww, h)
    norm_act(h, norm, act, out=hp[:, lead:])
    return conv.forward_padded(hp, lead, cache)


def pair_kernels(conv: CausalConv3d) -> tuple[torch.Tensor, torch.Tensor]:
    """Kernels `(2, 2 C_out, C_in, kh, kw)` (channels-last per tap) and bias `(2 C_out,)` that compute this
    (kt = 3, stride 1) conv over a time-doubled input as a 2-tap conv over its distinct frames.

    For the pair of equal frames `(d_j, d_j)` preceded by `d_{j-1}`, the first output is
    `(w0 + w1) d_{j-1} + w2 d_j` and the second `w0 d_{j-1} + (w1 + w2) d_j`: tap 0 (on `d_{j-1}`) stacks
    `(w0 + w1, w0)`, tap 1 (on `d_j`) stacks `(w2, w1 + w2)` along the output channels.
    """
    w0, w1, w2 = (w.permute(0, 2, 3, 1) for w in conv.weight.unbind(2))  # (C_out, kh, kw, C_in) views
    out = w0.new_empty(2, 2, *w0.shape)  # (tap, output phase, C_out, kh, kw, C_in)
    torch.add(w0, w1, out=out[0, 0])
    out[0, 1] = w0
    out[1, 0] = w2
    torch.add(w1, w2, out=out[1, 1])
    co, kh, kw, ci = w0.shape
    return out.view(2, 2 * co, kh, kw, ci).permute(0, 1, 4, 2, 3), conv.bias.repeat(2)


def conv_time_doubled(conv: CausalConv3d, h: torch.Tensor, first: int, norm: nn.GroupNorm, act: str,
                      cache: StreamCache) -> torch.Tensor:
    """`conv_normed` (inference only, kt = 3, stride 1) for an input doubled in time by nearest
    upsampling: after `first` (0 or 1) lone frames, frames come in equal pairs. Normalises only the
    distinct frames and convolves them with `pair_kernels` (2/3 of the multiply-adds); the streaming
    cache then carries one distinct frame.

    h: `(B, first + 2k, C_in, H, W)` -> `(B, first + 2k, C_out, H, W)`.
    """
    d = h[:, ::2]  # frame 0 (if lone), then one frame of each pair
    b, n, c, hh, ww = d.shape
    hp = cache.buffer(b, 1 + n, c, hh, ww, d)
    norm_act(d, norm, act, out=hp[:, 1:])
    past = cache.past.get(conv)
    hp[:, :1].copy_(hp[:, 1:2] if past is None else past)  # replicate padding at the start of a video
    if cache.workspace is None:
        kernels, bias = pair_kernels(conv)
    else:
        kernels, bias = cache.workspace.weights_of(conv, lambda: pair_kernels(conv))
    y = None
    for k in range(2):
        yk = F.conv2d(flat_frames(hp[:, k : k + n]), kernels[k], bias if k == 1 else None, padding=conv.padding[1:])
        y = yk if y is None else y.add_(yk)
    if past is None:
        cache.past[conv] = hp[:, n:].clone()
    else:
        past.copy_(hp[:, n:])
    cache.release(hp)
    co = conv.out_channels
    phases = y.unflatten(0, (b, n)).unflatten(2, (2, co))  # (B, n, 2, C_out, H, W)
    out = empty_frames(b, first + 2 * (n - first), co, hh, ww, d)
    if first:
        out[:, 0].copy_(phases[:, 0, 0])
    out[:, first:].unflatten(1, (n - first, 2)).copy_(phases[:, first:])
    return out
