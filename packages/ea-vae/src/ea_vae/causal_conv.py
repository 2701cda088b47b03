"""The causal 3D convolution of the Slice VAE: the definition, then the streaming layer that computes it.

Definition (:func:`causal_conv3d_reference`, plain PyTorch on `(B, C, T, H, W)`): a 3D convolution that
only looks at the current and earlier frames. Time is padded on the past side only, with `kt - 1`
copies of the first frame (replicate); space is padded symmetrically with zeros. A temporal stride of
2 keeps the output frames on the grid 0, 2, 4, ... of the video.

:class:`CausalConv3d` computes the same function on the network's frames-first layout
(`ea_vae.layout`), streaming: the frames of the past come from the previous slice through a
`StreamCache` instead of replication, so slice after slice gives the output of one pass. It sums one
2D convolution per temporal tap over time-shifted views of a padded buffer. Its inference fast paths
(normalising straight into that buffer, convolving time-doubled frames once) are a separate layer,
`ea_vae.causal_conv_fast`, tested against this one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layout import flat_frames, inplace_ok
from .stream import StreamCache

__all__ = ["causal_conv3d_reference", "CausalConv3d"]


def causal_conv3d_reference(x: torch.Tensor, conv: nn.Conv3d, spatial_padding: int | None = None) -> torch.Tensor:
    """The causal convolution by its definition: replicate frame 0 into the past, zero-pad space, conv3d.

    Args:
        x: (B, C_in, T, H, W), the whole video.
        conv: the layer whose weight `(C_out, C_in, kt, kh, kw)`, bias and stride are used.
        spatial_padding: zeros on each side of H and W; default `kh // 2`.

    Returns:
        (B, C_out, T', H', W'), T' = (T - 1) // stride_t + 1.
    """
    kt, kh, _ = conv.kernel_size
    pad = kh // 2 if spatial_padding is None else spatial_padding
    past = x[:, :, :1].expand(-1, -1, kt - 1, -1, -1)
    return F.conv3d(torch.cat([past, x], dim=2), conv.weight, conv.bias, stride=conv.stride, padding=(0, pad, pad))


class CausalConv3d(nn.Conv3d):
    """A 3D convolution that only looks at the current and earlier frames.

    Time is padded on the past side only: with `kt - 1` copies of the first frame (replicate) at the
    start of a video, or with the frames the previous slice left in the `StreamCache`. Space is padded
    symmetrically with zeros (`spatial_padding`, default `k // 2`). A temporal stride of 2 keeps the output
    frames on the grid 0, 2, 4, ... of the whole video however it is sliced.

    The weight keeps diffusers' shape `(C_out, C_in, kt, kh, kw)` but is stored tap-major and channels-last,
    so each temporal tap `weight[:, :, k]` is a channels-last 2D kernel that convolutions use as it is.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int, int] = 3,
        stride: int | tuple[int, int, int] = 1,
        spatial_padding: int | None = None,
    ):
        ks = (kernel_size,) * 3 if isinstance(kernel_size, int) else tuple(kernel_size)
        st = (stride,) * 3 if isinstance(stride, int) else tuple(stride)
        pad = ks[1] // 2 if spatial_padding is None else spatial_padding
        super().__init__(in_channels, out_channels, ks, st, padding=(0, pad, pad))
        kt = ks[0]
        tap_major = torch.empty(kt, out_channels, ks[1], ks[2], in_channels).permute(1, 4, 0, 2, 3)
        with torch.no_grad():
            tap_major.copy_(self.weight)
        self.weight = nn.Parameter(tap_major)

    @property
    def time_padding(self) -> int:
        return self.kernel_size[0] - 1

    def lead_frames(self, cache: StreamCache) -> int:
        """How many past frames precede the input in this call (`kt - 1` at the start of a video)."""
        past = cache.past.get(self)
        return self.time_padding if past is None else past.shape[1]

    def forward(self, h: torch.Tensor, cache: StreamCache) -> torch.Tensor:
        """h: `(B, T, C_in, H, W)` frames-first -> `(B, T', C_out, H', W')`."""
        lead = self.lead_frames(cache)
        b, t, c, hh, ww = h.shape
        hp = cache.buffer(b, lead + t, c, hh, ww, h)
        hp[:, lead:].copy_(h)
        return self.forward_padded(hp, lead, cache)

    def forward_padded(self, hp: torch.Tensor, lead: int, cache: StreamCache, kernels: torch.Tensor | None = None,
                       bias: torch.Tensor | None = None, padding: tuple[int, int] | None = None) -> torch.Tensor:
        """Like `forward`, for an input already written at `hp[:, lead:]` of a buffer
        (`lead = self.lead_frames(cache)`), which saves copying it; `hp[:, :lead]` is filled here.

        `hp` is given back to the cache's workspace afterwards (if it came from `cache.buffer`, it may be
        reused by the next layer). `kernels` `(kt, C_out', C_in, kh', kw')`, `bias` and `padding` replace this layer's own 2D kernels per
        temporal tap (the sub-pixel upsampler uses this); default: `weight[:, :, k]`, `bias`, `k // 2`.
        """
        p, st, kt = self.time_padding, self.stride[0], self.kernel_size[0]
        past = cache.past.get(self)
        if past is None:  # start of a video (or of an independent slice): replicate frame 0 into the past
            hp[:, :lead].copy_(hp[:, lead : lead + 1].expand(-1, lead, -1, -1, -1))
        else:
            hp[:, :lead].copy_(past)
        n_out = (hp.shape[1] - kt) // st + 1
        if n_out < 1:
            raise ValueError(f"CausalConv3d: {hp.shape[1] - lead} frames are too few for temporal stride {st}")
        if kernels is None:
            kernels, bias, padding = self.weight.unbind(2), self.bias, self.padding[1:]
        b = hp.shape[0]
        out = None
        for k in range(kt):  # one 2D conv per temporal tap over a time-shifted view of the buffer, summed
            x = hp[:, k : k + st * (n_out - 1) + 1 : st]
            y = F.conv2d(flat_frames(x), kernels[k], bias if k == kt - 1 else None, stride=self.stride[1:], padding=padding)
            out = y if out is None else out.add_(y)
        if p:
            tail = hp[:, n_out * st :]
            if past is not None and past.shape == tail.shape and inplace_ok(tail):
                past.copy_(tail)  # reuse the carried buffer: no fresh allocation per slice
            else:
                cache.past[self] = tail.clone()
        cache.release(hp)
        return out.unflatten(0, (b, -1))
