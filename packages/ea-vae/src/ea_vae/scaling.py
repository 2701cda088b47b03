"""Fit a VAE's latent scaling factor to data: the DiT should see latents of unit variance.

Latent diffusion assumes the (scaled) latents have about unit variance, like the noise they are mixed
with. A released VAE ships a measured `scaling_factor` (0.7125 for EasyAnimate V5.1, 0.18215 for
SD); a VAE trained from scratch with a tiny KL weight can have latents of any scale, so its factor must
be measured: `1 / std` of posterior samples over training clips (as Stable Diffusion did).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


@torch.no_grad()
def fit_scaling_factor(vae, videos: Iterable[torch.Tensor], generator: torch.Generator | None = None) -> float:
    """`1 / std` of posterior samples of `vae` over `videos` (tensors (B, 3, F, H, W) in [-1, 1]).

    Does not change the VAE; set `vae.config.scaling_factor` to the result and save it.
    """
    total, total_sq, n = 0.0, 0.0, 0
    device = next(vae.parameters()).device
    for video in videos:
        z = vae.encode(video.to(device)).sample(generator).double()
        total += z.sum().item()
        total_sq += z.square().sum().item()
        n += z.numel()
    if n == 0:
        raise ValueError("fit_scaling_factor: no videos given")
    var = total_sq / n - (total / n) ** 2
    if not var > 0:
        raise ValueError(f"fit_scaling_factor: the latents have no variance ({var})")
    return float(var ** -0.5)
