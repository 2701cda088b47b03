"""The video DiT block: PixArt-alpha's block with EasyAnimate's motion module between the attentions.

    x = x + gate_msa * SelfAttn(modulate(LN(x), shift_msa, scale_msa))     per frame (spatial)
    x = MotionModule(x)                                                    across frames (temporal)
    x = x + CrossAttn(x, text, text_mask)                                  no norm, as in PixArt
    x = x + gate_mlp * MLP(modulate(LN(x), shift_mlp, scale_mlp))

`SelfAttn` is chosen per block: "spatial" (each frame alone, as above), "full" (3D attention over all
frames' tokens) or "window" (`HybridWindowAttention`); the three share parameter names, so a checkpoint
loads into any of them.

The six shift/scale/gate vectors are adaLN-single's shared modulation plus the block's own learned
`scale_shift_table` (6, D).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ea_dit.attention import attention
from ea_dit.grid_reshape import TokenGrid
from ea_dit.motion_module import MotionModule
from ea_dit.window_attention import HybridWindowAttention


class SelfAttention(nn.Module):
    """Multi-head self-attention with a fused qkv projection, on `(N, L, D)` tokens."""

    def __init__(self, dim: int, num_heads: int, bias: bool = True, backend: str = "sdpa"):
        super().__init__()
        self.num_heads, self.backend = num_heads, backend
        self.qkv = nn.Linear(dim, 3 * dim, bias=bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = rearrange(self.qkv(x), "n l (three h d) -> three n l h d", three=3, h=self.num_heads).unbind(0)
        out = attention(q, k, v, backend=self.backend)
        return self.proj(rearrange(out, "n l h d -> n l (h d)"))


class CrossAttention(nn.Module):
    """Image tokens `(B, L, D)` attend to caption tokens `(B, T, D)`; `text_mask (B, T)` bool, True = attend."""

    def __init__(self, dim: int, num_heads: int, bias: bool = True, backend: str = "sdpa"):
        super().__init__()
        self.num_heads, self.backend = num_heads, backend
        self.q = nn.Linear(dim, dim, bias=bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor | None) -> torch.Tensor:
        q = rearrange(self.q(x), "b l (h d) -> b l h d", h=self.num_heads)
        k, v = rearrange(self.kv(text), "b t (two h d) -> two b t h d", two=2, h=self.num_heads).unbind(0)
        out = attention(q, k, v, key_mask=text_mask, backend=self.backend)
        return self.proj(rearrange(out, "b l h d -> b l (h d)"))


class MLP(nn.Module):
    """Linear -> GELU(tanh) -> Linear."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN modulation `x * (1 + scale) + shift` (every block and the final layer); shift, scale (B, 1, D)."""
    return x * (1 + scale) + shift


class VideoDiTBlock(nn.Module):
    """One PixArt block on the tokens of B videos of F frames, `x: (B, F*N, D)` frame-major."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, attention_bias: bool = True,
                 norm_eps: float = 1e-6, norm_elementwise_affine: bool = False, backend: str = "sdpa",
                 motion_module: MotionModule | None = None, self_attention: str = "spatial",
                 window_size: int | None = None, window_global_keys: int = 1024):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps, elementwise_affine=norm_elementwise_affine)
        self.self_attention = self_attention
        if self_attention == "window":
            self.attn = HybridWindowAttention(dim, num_heads, window=window_size, num_global_keys=window_global_keys,
                                              bias=attention_bias)
        elif self_attention in ("spatial", "full"):
            self.attn = SelfAttention(dim, num_heads, bias=attention_bias, backend=backend)
        else:
            raise ValueError(f"self_attention {self_attention!r} is unknown; choose 'spatial', 'full' or 'window'")
        self.motion_module = motion_module
        self.cross_attn = CrossAttention(dim, num_heads, bias=attention_bias, backend=backend)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps, elementwise_affine=norm_elementwise_affine)
        self.mlp = MLP(dim, int(dim * mlp_ratio))
        self.scale_shift_table = nn.Parameter(torch.randn(6, dim) / dim**0.5)

    def set_attention_backend(self, backend: str) -> None:
        if self.self_attention != "window":  # hybrid window attention has its own kernels
            self.attn.backend = backend
        self.cross_attn.backend = backend
        if self.motion_module is not None:
            self.motion_module.set_attention_backend(backend)

    def forward(self, x: torch.Tensor, modulation: torch.Tensor, text: torch.Tensor,
                text_mask: torch.Tensor | None, tokens: TokenGrid) -> torch.Tensor:
        """x (B, F*N, D), modulation (B, 6, D), text (B, T, D), text_mask (B, T) bool -> (B, F*N, D).

        `tokens` = (F, height, width), N = height*width; checked by `VideoDiT.forward`.
        """
        f = tokens.num_frames
        assert x.shape[1] == f * tokens.height * tokens.width, (tuple(x.shape), tokens)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (
            self.scale_shift_table[None] + modulation).chunk(6, dim=1)  # each (B, 1, D)
        h = modulate(self.norm1(x), shift_msa, scale_msa)
        if self.self_attention == "spatial":  # each frame alone
            h = self.attn(rearrange(h, "b (f n) d -> (b f) n d", f=f))
            h = rearrange(h, "(b f) n d -> b (f n) d", f=f)
        elif self.self_attention == "full":  # all F*N tokens
            h = self.attn(h)
        else:
            h = self.attn(h, tokens)
        x = x + gate_msa * h
        if self.motion_module is not None:
            x = self.motion_module(rearrange(x, "b (f n) d -> (b f) n d", f=f), tokens)
            x = rearrange(x, "(b f) n d -> b (f n) d", f=f)
        x = x + self.cross_attn(x, text, text_mask)  # per token, so all frames at once
        h = modulate(self.norm2(x), shift_mlp, scale_mlp)
        return x + gate_mlp * self.mlp(h)
