"""Input embeddings of the video DiT (PixArt-alpha's, applied frame by frame).

- :class:`PatchEmbed`: `p x p` patches of every latent frame -> tokens, plus the 2D sin-cos position
  embedding with PixArt's resolution scaling.
- :func:`timestep_embedding` / :class:`TimestepEmbedder`: sinusoidal features of the diffusion step
  (cos first, 256 channels) -> MLP.
- :class:`AdaLNSingle`: PixArt's adaLN-single - one shared MLP turns the timestep embedding into the six
  shift/scale/gate vectors every block adds to its own learned table.
- :class:`CaptionProjection`: T5 features -> hidden size.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


def sincos_1d(embed_dim: int, pos: torch.Tensor) -> torch.Tensor:
    """(M,) positions -> (M, embed_dim) `[sin(pos * w_i), cos(pos * w_i)]`, w_i = 10000^(-2i/embed_dim)."""
    if embed_dim % 2:
        raise ValueError(f"sin-cos embedding needs an even dimension, got {embed_dim}")
    dtype = torch.float32 if pos.device.type == "mps" else torch.float64
    omega = torch.arange(embed_dim // 2, device=pos.device, dtype=dtype) / (embed_dim / 2.0)
    omega = 1.0 / 10000**omega
    out = torch.outer(pos.reshape(-1).to(dtype), omega)
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)


def sincos_2d_pos_embed(embed_dim: int, height: int, width: int, base_size: int, interpolation_scale: float,
                        device: torch.device | None = None) -> torch.Tensor:
    """PixArt's 2D position embedding for a `height x width` token grid, row-major -> (height*width, D) fp32.

    Positions are stretched so that any grid spans the same range as the training grid of `base_size`
    tokens (`i / (height / base_size) / interpolation_scale`), which is how PixArt transfers between
    resolutions. The first half of the channels encodes the column, the second half the row.
    """
    if embed_dim % 4:
        raise ValueError(f"2D sin-cos embedding needs a dimension divisible by 4, got {embed_dim}")
    rows = torch.arange(height, device=device, dtype=torch.float32) / (height / base_size) / interpolation_scale
    cols = torch.arange(width, device=device, dtype=torch.float32) / (width / base_size) / interpolation_scale
    row_pos = rows[:, None].expand(height, width)
    col_pos = cols[None, :].expand(height, width)
    emb = torch.cat([sincos_1d(embed_dim // 2, col_pos), sincos_1d(embed_dim // 2, row_pos)], dim=1)
    return emb.float()


class PatchEmbed(nn.Module):
    """Latent frames `(B*F, C, H, W)` -> tokens `(B*F, (H/p)*(W/p), D)` with the 2D position embedding added."""

    def __init__(self, in_channels: int, hidden_size: int, patch_size: int, sample_size: int,
                 interpolation_scale: float):
        super().__init__()
        self.patch_size = patch_size
        self.base_size = sample_size // patch_size
        self.interpolation_scale = interpolation_scale
        self.proj = nn.Conv2d(in_channels, hidden_size, kernel_size=patch_size, stride=patch_size)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        height, width = frames.shape[-2] // self.patch_size, frames.shape[-1] // self.patch_size
        tokens = rearrange(self.proj(frames), "n c h w -> n (h w) c")
        pos = sincos_2d_pos_embed(tokens.shape[-1], height, width, self.base_size, self.interpolation_scale,
                                  device=frames.device)
        return (tokens + pos).to(tokens.dtype)


def timestep_embedding(t: torch.Tensor, dim: int = 256, max_period: float = 10000.0) -> torch.Tensor:
    """(N,) possibly fractional steps -> (N, dim) fp32 `[cos(t * f_i), sin(t * f_i)]`, f_i = max_period^(-i/(dim/2))."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class TimestepEmbedder(nn.Module):
    """Sinusoidal features (256) -> Linear -> SiLU -> Linear; used for timesteps and PixArt's size conditions."""

    def __init__(self, out_dim: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.fc1 = nn.Linear(freq_dim, out_dim)
        self.fc2 = nn.Linear(out_dim, out_dim)

    def forward(self, t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """(N,) -> (N, out_dim)."""
        return self.fc2(F.silu(self.fc1(timestep_embedding(t, self.freq_dim).to(dtype))))


class AdaLNSingle(nn.Module):
    """adaLN-single: timestep (+ size conditions) -> embedding `c` (B, D) and modulation `SiLU(c) W` (B, 6, D).

    With `use_additional_conditions` (PixArt 1024 models) the embeddings of the resolution `(h, w)` and
    of the aspect ratio, D/3 channels each, are concatenated and added to the timestep embedding.
    """

    def __init__(self, hidden_size: int, use_additional_conditions: bool = False):
        super().__init__()
        self.timestep_embedder = TimestepEmbedder(hidden_size)
        self.use_additional_conditions = use_additional_conditions
        if use_additional_conditions:
            self.resolution_embedder = TimestepEmbedder(hidden_size // 3)
            self.aspect_ratio_embedder = TimestepEmbedder(hidden_size // 3)
        self.linear = nn.Linear(hidden_size, 6 * hidden_size)

    def forward(self, timestep: torch.Tensor, dtype: torch.dtype, resolution: torch.Tensor | None = None,
                aspect_ratio: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """timestep (B,), resolution (B, 2), aspect_ratio (B, 1) -> (modulation (B, 6, D), embedding (B, D))."""
        emb = self.timestep_embedder(timestep, dtype)
        if self.use_additional_conditions:
            b = timestep.shape[0]
            res = self.resolution_embedder(resolution.reshape(-1), dtype).reshape(b, -1)
            ar = self.aspect_ratio_embedder(aspect_ratio.reshape(-1), dtype).reshape(b, -1)
            emb = emb + torch.cat([res, ar], dim=1)
        mod = self.linear(F.silu(emb))
        return rearrange(mod, "b (six d) -> b six d", six=6), emb


class CaptionProjection(nn.Module):
    """T5 features (B, L, caption_channels) -> (B, L, D): Linear -> GELU(tanh) -> Linear."""

    def __init__(self, caption_channels: int, hidden_size: int):
        super().__init__()
        self.fc1 = nn.Linear(caption_channels, hidden_size)
        self.fc2 = nn.Linear(hidden_size, hidden_size)

    def forward(self, caption: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(caption), approximate="tanh"))
