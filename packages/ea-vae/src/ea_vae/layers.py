"""Building blocks of the Slice VAE: causal 3D convolution, ResNet blocks, down/up blocks, mid block.

Layout inside the network: a video is kept *frames first*, `(B, T, C, H, W)`, with every frame stored
channels-last. Per-frame operations (GroupNorm, attention, spatial resampling) then work on a
`(B*T, C, H, W)` view without copies, and a causal 3D convolution is the sum of one 2D convolution per
temporal tap over time-shifted views of the same tensor (no padded copy of the input).

Streaming: every layer that looks at earlier frames takes a `StreamCache`. A causal convolution stores
its last input frames there, a temporal upsampler remembers that it has emitted frame 0, so feeding a
video slice by slice through the same cache gives exactly the output of one pass over the whole video.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

# ----------------------------------------------------------------------------- layout helpers


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


def _flat(h: torch.Tensor) -> torch.Tensor:
    """`(B, T, C, H, W)` -> `(B*T, C, H, W)`; a view unless B > 1 and `h` is a time slice."""
    x = h.flatten(0, 1)
    if x.shape[0] == 1:  # a lone frame: give dim 0 a stride that keeps it recognisably channels-last
        x = x.as_strided(x.shape, (x[0].numel(), *x.stride()[1:]))
    return x


def _inplace_ok(x: torch.Tensor) -> bool:
    return not (torch.is_grad_enabled() and x.requires_grad)


_ACTIVATIONS = {"silu": F.silu, "swish": F.silu, "relu": F.relu, "gelu": None, "mish": F.mish}


def activation(x: torch.Tensor, name: str) -> torch.Tensor:
    """The configured nonlinearity, in place when autograd allows it."""
    if name == "gelu":
        return F.gelu(x)
    return _ACTIVATIONS[name](x, inplace=_inplace_ok(x))


def norm_act(h: torch.Tensor, norm: nn.GroupNorm, act: str | None, out: torch.Tensor | None = None) -> torch.Tensor:
    """Per-frame GroupNorm (statistics over C/groups x H x W of each frame), then `act`.

    h: `(B, T, C, H, W)` -> same shape, written into `out` if given. Per-frame statistics make the result
    independent of slicing.
    """
    y = F.group_norm(_flat(h), norm.num_groups, norm.weight, norm.bias, norm.eps)
    if out is None:
        return (y if act is None else activation(y, act)).unflatten(0, h.shape[:2])
    if act == "silu" and h.shape[0] == 1 and _inplace_ok(y):
        torch.ops.aten.silu.out(y, out=_flat(out))  # no intermediate tensor
    else:
        out.copy_((y if act is None else activation(y, act)).unflatten(0, h.shape[:2]))
    return out


def pointwise_conv(conv: nn.Conv3d, h: torch.Tensor) -> torch.Tensor:
    """A 1x1x1 `nn.Conv3d` applied to frames-first `h` `(B, T, C, H, W)`."""
    y = F.conv2d(_flat(h), conv.weight.flatten(2).unsqueeze(-1), conv.bias)
    return y.unflatten(0, h.shape[:2])


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

    def clear(self) -> None:
        self.past.clear()
        self.started.clear()


# ----------------------------------------------------------------------------- causal convolution


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
            y = F.conv2d(_flat(x), kernels[k], bias if k == kt - 1 else None, stride=self.stride[1:], padding=padding)
            out = y if out is None else out.add_(y)
        if p:
            tail = hp[:, n_out * st :]
            if past is not None and past.shape == tail.shape and _inplace_ok(tail):
                past.copy_(tail)  # reuse the carried buffer: no fresh allocation per slice
            else:
                cache.past[self] = tail.clone()
        cache.release(hp)
        return out.unflatten(0, (b, -1))

    def pair_kernels(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Kernels `(2, 2 C_out, C_in, kh, kw)` (channels-last per tap) and bias `(2 C_out,)` that compute this
        (kt = 3, stride 1) conv over a time-doubled input as a 2-tap conv over its distinct frames.

        For the pair of equal frames `(d_j, d_j)` preceded by `d_{j-1}`, the first output is
        `(w0 + w1) d_{j-1} + w2 d_j` and the second `w0 d_{j-1} + (w1 + w2) d_j`: tap 0 (on `d_{j-1}`) stacks
        `(w0 + w1, w0)`, tap 1 (on `d_j`) stacks `(w2, w1 + w2)` along the output channels.
        """
        w0, w1, w2 = (w.permute(0, 2, 3, 1) for w in self.weight.unbind(2))  # (C_out, kh, kw, C_in) views
        out = w0.new_empty(2, 2, *w0.shape)  # (tap, output phase, C_out, kh, kw, C_in)
        torch.add(w0, w1, out=out[0, 0])
        out[0, 1] = w0
        out[1, 0] = w2
        torch.add(w1, w2, out=out[1, 1])
        co, kh, kw, ci = w0.shape
        return out.view(2, 2 * co, kh, kw, ci).permute(0, 1, 4, 2, 3), self.bias.repeat(2)

    def forward_doubled(self, h: torch.Tensor, first: int, norm: nn.GroupNorm, act: str,
                        cache: StreamCache) -> torch.Tensor:
        """`forward_normed` (inference only, kt = 3, stride 1) for an input doubled in time by nearest
        upsampling: after `first` (0 or 1) lone frames, frames come in equal pairs. Normalises only the
        distinct frames and convolves them with `pair_kernels` (2/3 of the multiply-adds); the streaming
        cache then carries one distinct frame.

        h: `(B, first + 2k, C_in, H, W)` -> `(B, first + 2k, C_out, H, W)`.
        """
        d = h[:, ::2]  # frame 0 (if lone), then one frame of each pair
        b, n, c, hh, ww = d.shape
        hp = cache.buffer(b, 1 + n, c, hh, ww, d)
        norm_act(d, norm, act, out=hp[:, 1:])
        past = cache.past.get(self)
        hp[:, :1].copy_(hp[:, 1:2] if past is None else past)  # replicate padding at the start of a video
        if cache.workspace is None:
            kernels, bias = self.pair_kernels()
        else:
            kernels, bias = cache.workspace.weights_of(self, self.pair_kernels)
        y = None
        for k in range(2):
            yk = F.conv2d(_flat(hp[:, k : k + n]), kernels[k], bias if k == 1 else None, padding=self.padding[1:])
            y = yk if y is None else y.add_(yk)
        if past is None:
            cache.past[self] = hp[:, n:].clone()
        else:
            past.copy_(hp[:, n:])
        cache.release(hp)
        co = self.out_channels
        phases = y.unflatten(0, (b, n)).unflatten(2, (2, co))  # (B, n, 2, C_out, H, W)
        out = empty_frames(b, first + 2 * (n - first), co, hh, ww, d)
        if first:
            out[:, 0].copy_(phases[:, 0, 0])
        out[:, first:].unflatten(1, (n - first, 2)).copy_(phases[:, first:])
        return out

    def forward_normed(self, h: torch.Tensor, norm: nn.GroupNorm, act: str, cache: StreamCache) -> torch.Tensor:
        """`forward(norm_act(h, norm, act))`, writing the normalised input straight into the padded buffer."""
        lead = self.lead_frames(cache)
        b, t, c, hh, ww = h.shape
        hp = cache.buffer(b, lead + t, c, hh, ww, h)
        norm_act(h, norm, act, out=hp[:, lead:])
        return self.forward_padded(hp, lead, cache)


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
            y = self.conv1.forward_doubled(h, doubled, self.norm1, self.act, cache)
        else:
            y = self.conv1.forward_normed(h, self.norm1, self.act, cache)
        y = self.conv2.forward_normed(y, self.norm2, self.act, cache)
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
