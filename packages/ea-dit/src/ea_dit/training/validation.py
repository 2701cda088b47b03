"""Validation loss at fixed timesteps and fixed noise: comparable from one evaluation to the next.

The per-batch training loss mixes random timesteps, noise and clips, so it is too noisy to show
progress. Here every (clip, timestep) pair gets the same noise at every call (drawn from `seed`), so the
only thing that changes between calls is the model.
"""

from __future__ import annotations

import torch

#: Timesteps probed by default (of 1000): low, middle and high noise.
DEFAULT_TIMESTEPS = (100, 300, 500, 700, 900)


@torch.no_grad()
def fixed_validation_loss(model, diffusion, latents: torch.Tensor, embeds: torch.Tensor, mask: torch.Tensor,
                          timesteps: tuple[int, ...] = DEFAULT_TIMESTEPS, seed: int = 0,
                          batch_size: int = 32, prediction_type: str = "epsilon") -> dict[str, float]:
    """Noise-prediction MSE of `model` on clean `latents` (N, C, F, H, W) (scaled VAE latents) with their
    caption `embeds` (N, T, D) and `mask` (N, T), at each of `timesteps` with fixed noise.

    Returns `{"val_mse": mean over everything, "val_mse_t<t>": mean at timestep t, ...}`. The model's
    output may carry learned-variance channels after the C noise channels (they are ignored). A
    "v_prediction" model's output is converted to noise first, so the numbers compare across both kinds.
    """
    if latents.ndim != 5 or len(latents) != len(embeds) or len(embeds) != len(mask):
        raise ValueError(f"latents must be (N, C, F, H, W) with N embeds and masks, got {tuple(latents.shape)}, "
                         f"{tuple(embeds.shape)}, {tuple(mask.shape)}")
    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn((len(timesteps), *latents.shape), generator=g)
    channels = latents.shape[1]
    out: dict[str, float] = {}
    for k, t_value in enumerate(timesteps):
        total = 0.0
        for i in range(0, len(latents), batch_size):
            x0 = latents[i:i + batch_size].to(device)
            eps = noise[k, i:i + batch_size].to(device)
            t = torch.full((len(x0),), int(t_value), device=device, dtype=torch.long)
            xt = diffusion.q_sample(x0, t, eps)
            pred = model(xt, t, embeds[i:i + batch_size].to(device), mask[i:i + batch_size].to(device))
            pred = diffusion.noise_prediction(pred.float(), xt.float(), t, prediction_type)
            total += (pred[:, :channels].float() - eps).square().mean(dim=(1, 2, 3, 4)).sum().item()
        out[f"val_mse_t{int(t_value)}"] = total / len(latents)
    out["val_mse"] = sum(out.values()) / len(timesteps)
    return out
