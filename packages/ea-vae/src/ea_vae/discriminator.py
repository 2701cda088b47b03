"""Patch discriminators for adversarial VAE training: a per-frame 2D PatchGAN and a 3D patch discriminator.

EasyAnimate trains its VAE against both (``contperceptual.py``): the 2D "NLayer" PatchGAN of pix2pix /
taming-transformers judges every frame on its own, the 3D discriminator judges short space-time patches
so that flicker between frames is penalised too. Both return a map of logits, one per patch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def init_discriminator_weights(module: nn.Module) -> None:
    """The DCGAN initialisation used for both discriminators: convs ~ N(0, 0.02), norms ~ N(1, 0.02).

    Apply with ``disc.apply(init_discriminator_weights)``.
    """
    if isinstance(module, nn.Conv2d | nn.Conv3d):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d | nn.GroupNorm):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class NLayerDiscriminator(nn.Module):
    """The PatchGAN of pix2pix with ``n_layers`` stride-2 stages, applied to single frames.

    Input ``(N, C, H, W)``; output logits ``(N, 1, H', W')`` with ``H' = H / 2**n_layers - 2`` (for H
    divisible by ``2**n_layers``), each seeing a 70x70 patch at the default ``n_layers=3``.
    """

    def __init__(self, in_channels: int = 3, base_channels: int = 64, n_layers: int = 3):
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"NLayerDiscriminator needs n_layers >= 1, got {n_layers}")
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, base_channels, kernel_size=4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
        ]
        channels = base_channels
        for n in range(1, n_layers + 1):
            out = base_channels * min(2**n, 8)
            # the last stage keeps the resolution (stride 1), as in pix2pix
            stride = 2 if n < n_layers else 1
            layers += [
                nn.Conv2d(channels, out, kernel_size=4, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(out),
                nn.LeakyReLU(0.2),
            ]
            channels = out
        layers.append(nn.Conv2d(channels, 1, kernel_size=4, stride=1, padding=1))
        self.main = nn.Sequential(*layers)
        self.apply(init_discriminator_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` -> ``(N, 1, H', W')`` logits."""
        if x.ndim != 4:
            raise ValueError(f"NLayerDiscriminator expects (N, C, H, W) frames, got shape {tuple(x.shape)}")
        return self.main(x)


def blur_pool3d(x: torch.Tensor) -> torch.Tensor:
    """Anti-aliased stride-2 downsampling in (F, H, W): a normalised [1, 2, 1]^3 binomial filter per channel.

    ``(B, C, F, H, W)`` -> ``(B, C, ceil(F/2), ceil(H/2), ceil(W/2))``.
    """
    taps = torch.tensor([1.0, 2.0, 1.0], dtype=x.dtype, device=x.device)
    kernel = taps[:, None, None] * taps[None, :, None] * taps[None, None, :]
    kernel = (kernel / kernel.sum()).expand(x.shape[1], 1, 3, 3, 3)
    return F.conv3d(x, kernel, stride=2, padding=1, groups=x.shape[1])


class DiscriminatorBlock3D(nn.Module):
    """Pre-activation residual block (GroupNorm, LeakyReLU, conv) with optional blur-pool downsampling.

    ``(B, C_in, F, H, W)`` -> ``(B, C_out, F', H', W')``, halved in all three axes when ``downsample``.
    The sum is divided by sqrt(2) to keep activations at unit scale.
    """

    def __init__(self, in_channels: int, out_channels: int, downsample: bool, norm_groups: int = 32):
        super().__init__()
        self.downsample = downsample
        self.norm1 = nn.GroupNorm(math.gcd(norm_groups, in_channels), in_channels)
        self.conv1 = nn.Conv3d(in_channels, out_channels, kernel_size=3, padding=1)
        self.norm2 = nn.GroupNorm(math.gcd(norm_groups, out_channels), out_channels)
        self.conv2 = nn.Conv3d(out_channels, out_channels, kernel_size=3, padding=1)
        self.shortcut = nn.Conv3d(in_channels, out_channels, kernel_size=1)
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.shortcut(blur_pool3d(x) if self.downsample else x)
        h = self.conv1(self.act(self.norm1(x)))
        h = self.act(self.norm2(h))
        if self.downsample:
            h = blur_pool3d(h)
        h = self.conv2(h)
        return (h + shortcut) / math.sqrt(2.0)


class Discriminator3D(nn.Module):
    """3D patch discriminator over space-time: a stride-2 stem, residual blocks, a logit conv.

    Input ``(B, C, F, H, W)``; output ``(B, 1, F', H', W')`` with every axis divided by
    ``2 ** len(block_out_channels)`` (rounded up), e.g. ``(B, 3, 17, 64, 64)`` -> ``(B, 1, 3, 8, 8)``.
    Images (``F = 1``) give ``F' = 1``.
    """

    def __init__(self, in_channels: int = 3, block_out_channels: tuple[int, ...] = (64, 128, 256),
                 norm_groups: int = 32):
        super().__init__()
        if not block_out_channels:
            raise ValueError("Discriminator3D needs at least one block in block_out_channels")
        self.conv_in = nn.Conv3d(in_channels, block_out_channels[0], kernel_size=3, stride=2, padding=1)
        blocks = []
        channels = block_out_channels[0]
        for i, out in enumerate(block_out_channels):
            blocks.append(DiscriminatorBlock3D(channels, out, downsample=i < len(block_out_channels) - 1,
                                               norm_groups=norm_groups))
            channels = out
        self.blocks = nn.ModuleList(blocks)
        self.norm_out = nn.GroupNorm(math.gcd(norm_groups, channels), channels)
        self.act = nn.LeakyReLU(0.2)
        self.conv_out = nn.Conv3d(channels, 1, kernel_size=3, padding=1)
        self.apply(init_discriminator_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, F, H, W)`` -> ``(B, 1, F', H', W')`` logits."""
        if x.ndim != 5:
            raise ValueError(f"Discriminator3D expects (B, C, F, H, W) video, got shape {tuple(x.shape)}")
        h = self.conv_in(x)
        for block in self.blocks:
            h = block(h)
        return self.conv_out(self.act(self.norm_out(h)))
