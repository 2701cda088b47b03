"""Text-to-video sampling with a VideoDiT: prompts -> latents (decode them with any VAE).

    latents = generate_latents(dit, text_encoder, ["a red ball rolls"], latent_shape=(4, 5, 32, 32))
    video = vae.decode(latents / vae.config.scaling_factor)   # (B, 3, 1 + 4 * (5 - 1), 256, 256)

The DiT works on scaled latents (`latents * scaling_factor` of the VAE it was trained with), so the
caller unscales before decoding, as in diffusers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from .diffusion import GaussianDiffusion, classifier_free_guidance


@torch.no_grad()
def generate_latents(dit: torch.nn.Module, text_encoder: Callable, prompts: Sequence[str],
                     latent_shape: tuple[int, int, int, int], *, steps: int = 25,
                     guidance_scale: float = 4.5, negative_prompt: str = "", sampler: str = "ddim",
                     generator: torch.Generator | None = None, diffusion: GaussianDiffusion | None = None,
                     progress: Callable | None = None) -> torch.Tensor:
    """Sample latents `(B, C, F, H, W)` for `prompts` with classifier-free guidance.

    Args:
        dit: a VideoDiT (any module `dit(x, t, text_embeds=, text_mask=)` predicting noise [+ variance]).
        text_encoder: prompts -> (embeddings (B, L, D), mask (B, L)), e.g. `ea_dit.T5TextEncoder`.
        latent_shape: `(C, F, H, W)` of one sample's latents.
        steps: sampling steps; sampler: "ddim" (deterministic) or "ddpm" (ancestral, learned variance).
        guidance_scale: CFG scale; 1 disables the unconditional branch's effect.
        generator: CPU generator for the initial noise, for reproducible samples.
    """
    if isinstance(prompts, str):
        prompts = [prompts]
    if len(latent_shape) != 4:
        raise ValueError(f"latent_shape must be (C, F, H, W), got {latent_shape}")
    if sampler not in ("ddim", "ddpm"):
        raise ValueError(f"sampler must be 'ddim' or 'ddpm', got {sampler!r}")
    diffusion = diffusion or GaussianDiffusion()
    device = next(dit.parameters()).device
    dtype = next(dit.parameters()).dtype
    embeds, mask = text_encoder(list(prompts))
    null_embeds, null_mask = text_encoder([negative_prompt] * len(prompts))
    cond = {"text_embeds": embeds.to(device, dtype), "text_mask": mask.to(device)}
    uncond = {"text_embeds": null_embeds.to(device, dtype), "text_mask": null_mask.to(device)}
    denoise = classifier_free_guidance(dit, guidance_scale, cond, uncond)
    shape = (len(prompts), *latent_shape)
    if sampler == "ddim":
        return diffusion.sample_ddim(denoise, shape, steps=steps, generator=generator, device=device,
                                     dtype=dtype, progress=progress)
    return diffusion.sample_ddpm(denoise, shape, steps=steps, generator=generator, device=device,
                                 dtype=dtype, progress=progress)
