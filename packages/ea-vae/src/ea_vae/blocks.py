"""Blocks of the Slice VAE, in the frames-first layout (`ea_vae.layout`), streaming through a `StreamCache`.

ResNet block (two causal convolutions), per-frame spatial attention, the mid block, the down- and
upsamplers (the upsampler's convolution computed sub-pixel) and the down/up blocks named in the config.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .causal_conv import CausalConv3d
from .causal_conv_fast import conv_normed, conv_time_doubled
from .layout import norm_act, pointwise_conv
from .stream import StreamCache

# ----------------------------------------------------------------------------- ResNet and attention


class ResnetBlock3D(nn.Module):
    """GroupNorm -> act -> CausalConv3d -> GroupNorm -> act -> CausalConv3d, plus a (1x1x1) shortcut.

    GroupNorm is per frame, so the block's output for a frame depends only on that frame's features and
    the two frames before it, never on how the video is sliced.
    """

    def __init__(self, in_channels: int, out_channels: int, groups: int, eps: float, act: str):
        super().__init__()
        self.act = act
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=eps)
        self.conv1 = CausalConv3d(in_channels, out_channels, 3)
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=eps)
        self.conv2 = CausalConv3d(out_channels, out_channels, 3)
        self.shortcut = nn.Conv3d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, h: torch.Tensor, cache: StreamCache, doubled: int | None = None) -> torch.Tensor:
        """h: `(B, T, C_in, H, W)` -> `(B, T, C_out, H, W)`. `doubled`: h comes from a temporal upsampler
        (frames in equal pairs after `doubled` lone frames), which lets inference skip repeated work."""
        if doubled is not None and not torch.is_grad_enabled():
            y = conv_time_doubled(self.conv1, h, doubled, self.norm1, self.act, cache)
        else:
            y = conv_normed(self.conv1, h, self.norm1, self.act, cache)
        y = conv_normed(self.conv2, y, self.norm2, self.act, cache)
        return y.add_(h if self.shortcut is None else pointwise_conv(self.shortcut, h))


class SpatialAttention(nn.Module):
    """Multi-head self-attention among the H*W positions of each frame (GroupNorm first, residual added)."""

    def __init__(self, channels: int, heads: int, groups: int, eps: float):
        super().__init__()
        self.heads = heads
        self.group_norm = nn.GroupNorm(groups, channels, eps=eps)
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        self.to_out = nn.Linear(channels, channels)

    def forward(self, h: torch.Tensor, cache: StreamCache | None = None) -> torch.Tensor:
        """h: `(B, T, C, H, W)` -> same shape."""
        b, t, c, hh, ww = h.shape
        x = norm_act(h, self.group_norm, None)
        x = rearrange(x, "b t c h w -> (b t) (h w) c")
        q, k, v = (rearrange(lin(x), "n s (nh d) -> n nh s d", nh=self.heads) for lin in (self.to_q, self.to_k, self.to_v))
        o = F.scaled_dot_product_attention(q, k, v)
        o = self.to_out(rearrange(o, "n nh s d -> n s (nh d)"))
        return h + rearrange(o, "(b t) (h w) c -> b t c h w", b=b, h=hh)


class MidBlock3D(nn.Module):
    """`num_layers` ResNet blocks at the lowest resolution, with optional per-frame attention between them."""

    def __init__(self, channels: int, num_layers: int, groups: int, eps: float, act: str,
                 attention: str | None = None, heads: int = 1):
        super().__init__()
        self.resnets = nn.ModuleList(ResnetBlock3D(channels, channels, groups, eps, act) for _ in range(num_layers))
        self.attentions = nn.ModuleList(
            SpatialAttention(channels, heads, groups, eps) for _ in range(num_layers - 1) if attention == "spatial"
        )

    def forward(self, h: torch.Tensor, cache: StreamCache) -> torch.Tensor:
        h = self.resnets[0](h, cache)
        for i, resnet in enumerate(self.resnets[1:]):
            if len(self.attentions):
                h = self.attentions[i](h)
            h = resnet(h, cache)
        return h


# ----------------------------------------------------------------------------- down and up sampling


class Downsample3D(nn.Module):
    """Pad H and W by one on the far side, then a stride-2 causal conv (stride 2 in time as well if asked)."""

    def __init__(self, channels: int, temporal: bool):
        super().__init__()
        self.conv = CausalConv3d(channels, channels, 3, stride=(2 if temporal else 1, 2, 2), spatial_padding=0)

    def forward(self, h: torch.Tensor, cache: StreamCache) -> torch.Tensor:
        b, t, c, hh, ww = h.shape
        lead = self.conv.lead_frames(cache)
        hp = cache.buffer(b, lead + t, c, hh + 1, ww + 1, h)
        hp[:, :, :, hh].zero_()
        hp[:, :, :, :, ww].zero_()
        hp[:, lead:, :, :hh, :ww].copy_(h)
        return self.conv.forward_padded(hp, lead, cache)


class Upsample3D(nn.Module):
    """Nearest x2 in space, causal 3x3x3 conv, then (if temporal) nearest x2 in time for every frame but the
    video's first, which stays alone: 1 + k frames -> 1 + 2k frames.

    The conv after nearest upsampling is computed sub-pixel: each of the four output phases (even/odd row,
    even/odd column) is a 2x2 conv of the low-resolution input with the 3x3 kernel folded accordingly, so
    the upsampled input is never materialised and the conv costs 16/36 of the direct one.
    """

    def __init__(self, channels: int, temporal: bool):
        super().__init__()
        self.temporal = temporal
        self.conv = CausalConv3d(channels, channels, 3)

    def phase_kernels(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Kernels `(kt, 4 C_out, C_in, 2, 2)` (phases (0,0), (0,1), (1,0), (1,1) stacked, channels-last per
        tap) and bias `(4 C_out,)`.

        Along each axis, output phase 0 (even pixel 2i) sees low-res pixels (i-1, i) with kernel taps
        (w0, w1 + w2); phase 1 (2i+1) sees (i, i+1) with (w0 + w1, w2).
        """
        w = self.conv.weight.permute(2, 0, 3, 4, 1)  # (kt, C_out, 3, 3, C_in): a view of the storage
        kt, co, ci = w.shape[0], w.shape[1], w.shape[4]
        if torch.is_grad_enabled() and w.requires_grad:  # differentiable version

            def fold(x: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:  # 3 taps -> 2 phases
                t0, t1, t2 = x.unbind(dim)
                return torch.stack([t0, t1 + t2], dim), torch.stack([t0 + t1, t2], dim)

            out = torch.stack([torch.stack(fold(r, 3), 1) for r in fold(w, 2)], 1)
        else:  # the same sums written straight into the result: no intermediate as large as the weight
            taps = (((0,), (1, 2)), ((0, 1), (2,)))  # [phase][folded tap] -> original taps summed
            out = w.new_empty(kt, 2, 2, co, 2, 2, ci)  # (kt, row phase, col phase, o, row tap, col tap, i)
            for pr in (0, 1):
                for pc in (0, 1):
                    for a in (0, 1):
                        for bb in (0, 1):
                            dst = out[:, pr, pc, :, a, bb]
                            src = [w[:, :, r, c] for r in taps[pr][a] for c in taps[pc][bb]]
                            if len(src) == 1:
                                dst.copy_(src[0])
                            else:
                                torch.add(src[0], src[1], out=dst)
                            for x in src[2:]:
                                dst.add_(x)
        return out.view(kt, 4 * co, 2, 2, ci).permute(0, 1, 4, 2, 3), self.conv.bias.repeat(4)

    def lone_first(self, cache: StreamCache) -> int:
        """1 if the next call starts the video (its frame 0 is not doubled in time), else 0."""
        return int(self.temporal and not cache.continuing and self not in cache.started)

    def forward(self, h: torch.Tensor, cache: StreamCache) -> torch.Tensor:
        """h: `(B, T, C, H, W)` -> `(B, T', C, 2H, 2W)`, T' = 2T (2T - 1 when h starts the video), or T."""
        b, t, c, hh, ww = h.shape
        lead = self.conv.lead_frames(cache)
        hp = cache.buffer(b, lead + t, c, hh + 2, ww + 2, h)  # zero border of 1 = the upsampled zero padding
        hp[:, :, :, 0].zero_()
        hp[:, :, :, -1].zero_()
        hp[:, :, :, :, 0].zero_()
        hp[:, :, :, :, -1].zero_()
        hp[:, lead:, :, 1:-1, 1:-1].copy_(h)
        if cache.workspace is None:  # transient: folded per call rather than held in memory
            kernels, bias = self.phase_kernels()
        else:  # folded once per encode/decode call, shared by its slices and tiles
            kernels, bias = cache.workspace.weights_of(self, self.phase_kernels)
        y = self.conv.forward_padded(hp, lead, cache, kernels, bias, (0, 0))
        del kernels  # (B, T, 4C, H+1, W+1)
        del hp
        phases = y.permute(0, 1, 3, 4, 2).unflatten(-1, (2, 2, c))  # (B, T, H+1, W+1, 2, 2, C)
        # Interleave the phases into the output, each frame written twice when upsampling time too.
        first = 0
        if self.temporal:
            first = self.lone_first(cache)
            cache.started.add(self)
        t_out = first + (2 * (t - first) if self.temporal else t - first)
        out = torch.empty(b, t_out, hh, 2, ww, 2, c, dtype=h.dtype, device=h.device)
        targets = [(out[:, :first], slice(0, first))] if first else []
        if self.temporal:
            rest = out[:, first:].unflatten(1, (t - first, 2))
            targets += [(rest[:, :, 0], slice(first, t)), (rest[:, :, 1], slice(first, t))]
        else:
            targets.append((out[:, first:], slice(first, t)))
        for dst, src in targets:
            for pa in (0, 1):
                for pb in (0, 1):
                    dst[:, :, :, pa, :, pb].copy_(phases[:, src, pa : pa + hh, pb : pb + ww, pa, pb])
        return out.view(b, t_out, 2 * hh, 2 * ww, c).permute(0, 1, 4, 2, 3)


class DownBlock3D(nn.Module):
    """ResNet blocks, then an optional downsampler (space, or space and time)."""

    temporal: bool = False

    def __init__(self, in_channels: int, out_channels: int, num_layers: int, groups: int, eps: float, act: str,
                 add_downsample: bool):
        super().__init__()
        self.resnets = nn.ModuleList(
            ResnetBlock3D(in_channels if i == 0 else out_channels, out_channels, groups, eps, act)
            for i in range(num_layers)
        )
        self.downsample = Downsample3D(out_channels, self.temporal) if add_downsample else None

    def forward(self, h: torch.Tensor, cache: StreamCache) -> torch.Tensor:
        for resnet in self.resnets:
            h = resnet(h, cache)
        return h if self.downsample is None else self.downsample(h, cache)


class SpatialDownBlock3D(DownBlock3D):
    """Down block that halves H and W."""

    temporal = False


class SpatialTemporalDownBlock3D(DownBlock3D):
    """Down block that halves H, W and time (frame 0 alone: 1 + 2k frames -> 1 + k)."""

    temporal = True


class UpBlock3D(nn.Module):
    """ResNet blocks, then an optional upsampler (space, or space and time)."""

    temporal: bool = False

    def __init__(self, in_channels: int, out_channels: int, num_layers: int, groups: int, eps: float, act: str,
                 add_upsample: bool):
        super().__init__()
        self.resnets = nn.ModuleList(
            ResnetBlock3D(in_channels if i == 0 else out_channels, out_channels, groups, eps, act)
            for i in range(num_layers)
        )
        self.upsample = Upsample3D(out_channels, self.temporal) if add_upsample else None

    def forward(self, h: torch.Tensor, cache: StreamCache, doubled: int | None = None) -> torch.Tensor:
        """`doubled`: h was doubled in time by the previous block's upsampler, after `doubled` lone frames."""
        for i, resnet in enumerate(self.resnets):
            h = resnet(h, cache, doubled if i == 0 else None)
        return h if self.upsample is None else self.upsample(h, cache)

    def doubles_time(self, cache: StreamCache) -> int | None:
        """For the next block: lone leading frames of this block's time-doubled output, or None."""
        if self.upsample is None or not self.upsample.temporal:
            return None
        return self.upsample.lone_first(cache)


class SpatialUpBlock3D(UpBlock3D):
    """Up block that doubles H and W."""

    temporal = False


class SpatialTemporalUpBlock3D(UpBlock3D):
    """Up block that doubles H, W and time (frame 0 alone: 1 + k frames -> 1 + 2k)."""

    temporal = True


BLOCKS = {
    "SpatialDownBlock3D": SpatialDownBlock3D,
    "SpatialTemporalDownBlock3D": SpatialTemporalDownBlock3D,
    "SpatialUpBlock3D": SpatialUpBlock3D,
    "SpatialTemporalUpBlock3D": SpatialTemporalUpBlock3D,
}
