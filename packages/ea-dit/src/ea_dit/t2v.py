"""Text-to-video: prompts -> T5 embeddings -> DiT sampling in latent space -> VAE decode.

    from ea_dit import T5TextEncoder, TextToVideoPipeline, VideoDiT
    from ea_vae import SliceVAE
    pipe = TextToVideoPipeline(VideoDiT.from_pretrained("runs/demo/dit/final"),
                               SliceVAE.from_pretrained("runs/demo/vae/final"),
                               T5TextEncoder.from_pretrained("runs/demo/text_encoder"))
    video = pipe(["a red circle moves left"], num_frames=9, height=64, width=64,
                 sampler="dpmpp_2m", steps=15, seed=0)          # (1, 3, 9, 64, 64) in [-1, 1]

The VAE is any object with `.decode(latents) -> video`, `.encode(video) -> posterior with .sample(g)`
(training only) and a `.config` with `latent_channels`, `spatial_compression`, `temporal_compression`
and `scaling_factor`, so ea-dit does not depend on ea-vae.

This module is the one owner of latent scaling: the DiT works on `latents * scaling_factor`
(:func:`scale_latents` / :func:`encode_latents`, used by training) and the VAE decodes
`latents / scaling_factor`
(:func:`decode_latents`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .diffusion import GaussianDiffusion, classifier_free_guidance, noise_predictor
from .samplers import SAMPLERS


def scale_latents(vae: Any, z: torch.Tensor) -> torch.Tensor:
    """VAE latents (a posterior sample) -> the DiT's latents: z x `scaling_factor`."""
    return z * vae.config.scaling_factor


def encode_latents(vae: Any, video: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """video `(B, 3, F, H, W)` in [-1, 1] -> the DiT's latents: a posterior sample x `scaling_factor`."""
    return scale_latents(vae, vae.encode(video).sample(generator))


def decode_latents(vae: Any, latents: torch.Tensor) -> torch.Tensor:
    """The DiT's latents `(B, C, f, h, w)` -> video `(B, 3, 1 + tc (f - 1), sc h, sc w)` in [-1, 1]."""
    dtype = _dtype_of(vae, latents.dtype)
    return vae.decode((latents / vae.config.scaling_factor).to(dtype)).float().clamp(-1, 1)


def pixel_multiple(dit: torch.nn.Module, vae: Any) -> int:
    """Frame sides must be multiples of this: VAE downsampling x DiT patch (x Grid Reshape cell)."""
    c = dit.config
    return vae.config.spatial_compression * c.patch_size * (c.motion_grid if c.motion_module else 1)


def read_run_folder(run: str | os.PathLike) -> dict:
    """Model paths and generation defaults of a run folder (what `apps/generate --run` reads).

    `run.json` (keys `dit`, `vae`, `text_encoder`: paths relative to the folder or absolute; optional
    `frames`, `height`, `width` or `size`, `fps`, `sampler`, `steps`, `guidance_scale`) wins; what it
    lacks comes from the trainers' layout:
    `dit/final`, `vae/final`, `text_encoder`, with `dit/config.json` (apps/train_dit's settings) for
    the training size and frame count and, when the folder has no `text_encoder`, its path.
    """
    run = Path(run)
    if not run.is_dir():
        raise FileNotFoundError(f"run folder {run}: no such folder")
    info: dict = {}
    if (run / "run.json").exists():
        try:
            info = json.loads((run / "run.json").read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{run / 'run.json'}: not valid JSON ({e})") from None
        if not isinstance(info, dict):
            raise ValueError(f"{run / 'run.json'}: expected a JSON object")
    train: dict = {}
    if (run / "dit" / "config.json").exists():
        try:
            train = json.loads((run / "dit" / "config.json").read_text())
        except json.JSONDecodeError:
            train = {}
        train = train if isinstance(train, dict) else {}
    out = {"dit": run / "dit" / "final", "vae": run / "vae" / "final", "text_encoder": run / "text_encoder"}
    if not out["text_encoder"].exists() and isinstance(train.get("text_encoder"), str):
        out["text_encoder"] = train["text_encoder"]
    for key in ("dit", "vae", "text_encoder"):
        if isinstance(info.get(key), str):
            value = Path(info[key])
            out[key] = value if value.is_absolute() or not (run / value).exists() else run / value
    for key in ("frames", "num_frames", "height", "width", "size", "fps"):
        value = info.get(key)
        if key in info and (isinstance(value, bool) or not isinstance(value, int | float) or not value > 0):
            raise ValueError(f"{run / 'run.json'}: {key} must be a positive number, got {value!r}")
    size = info.get("size", train.get("size"))
    for key, fallback in (("frames", info.get("num_frames", train.get("frames"))), ("height", size),
                          ("width", size), ("fps", None)):
        value = info.get(key, fallback)
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            out[key] = value
    # How the run's own evaluation samples (apps/demo writes these).
    if "sampler" in info:
        if info["sampler"] not in SAMPLERS:
            raise ValueError(f"{run / 'run.json'}: sampler must be one of {sorted(SAMPLERS)}, got {info['sampler']!r}")
        out["sampler"] = info["sampler"]
    for key, low in (("steps", 1), ("guidance_scale", 0)):
        if key in info:
            value = info[key]
            if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value < float("inf") \
                    or (key == "steps" and not isinstance(value, int)):
                raise ValueError(f"{run / 'run.json'}: {key} must be a number >= {low}, got {value!r}")
            out[key] = value
    return out


def _dtype_of(module: Any, default: torch.dtype) -> torch.dtype:
    params = getattr(module, "parameters", None)
    p = next(params(), None) if callable(params) else None
    return p.dtype if p is not None else default


@dataclass
class TextToVideoPipeline:
    """A trained VideoDiT, a VAE (duck-typed, see the module docstring) and a text encoder
    (`prompts -> (embeddings (B, L, D), mask (B, L))`, e.g. `ea_dit.T5TextEncoder`).

    `decode_latents_per_slice`: the VAE decodes this many latent frames at a time (Slice VAE; None
    decodes the whole video at once). It is applied to the VAE when it has `enable_slicing`.
    """

    dit: torch.nn.Module
    vae: Any
    text_encoder: Callable
    diffusion: GaussianDiffusion = field(default_factory=GaussianDiffusion)
    decode_latents_per_slice: int | None = 1

    def __post_init__(self) -> None:
        if hasattr(self.vae, "enable_slicing"):
            if self.decode_latents_per_slice is None:
                self.vae.disable_slicing()
            else:
                self.vae.enable_slicing(decode_latents=self.decode_latents_per_slice)
        if self.dit.config.in_channels != self.vae.config.latent_channels:
            raise ValueError(f"the DiT takes {self.dit.config.in_channels} latent channels but the VAE makes "
                             f"{self.vae.config.latent_channels}")

    @property
    def pixel_multiple(self) -> int:
        return pixel_multiple(self.dit, self.vae)

    @property
    def default_size(self) -> int:
        """Pixels per side the DiT was trained at."""
        return self.dit.config.sample_size * self.vae.config.spatial_compression

    def latent_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """`(C, f, h, w)` of one video's latents; raises ValueError naming what is wrong."""
        tc, sc, m = self.vae.config.temporal_compression, self.vae.config.spatial_compression, self.pixel_multiple
        for name, value in (("num_frames", num_frames), ("height", height), ("width", width)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if (num_frames - 1) % tc:
            raise ValueError(f"num_frames={num_frames}: the VAE needs 1 + {tc}k frames")
        if height % m or width % m:
            raise ValueError(f"height and width must be multiples of {m}, got {height}x{width}")
        return self.vae.config.latent_channels, 1 + (num_frames - 1) // tc, height // sc, width // sc

    @torch.no_grad()
    def generate_latents(self, prompts: str | Sequence[str], num_frames: int, height: int, width: int, *,
                         steps: int = 20, guidance_scale: float = 4.5, sampler: str = "dpmpp_2m",
                         seed: int | Sequence[int] = 0, negative_prompt: str = "",
                         progress: Callable[[Iterable], Iterable] | None = None) -> torch.Tensor:
        """Sample the DiT's (scaled) latents `(B, C, f, h, w)`, float32, one per prompt.

        `seed`: one int (video i uses seed + i) or one per prompt. Each video's noise comes from its own
        CPU generator, so a (prompt, seed) pair gives the same video whatever else is in the batch and
        on whichever device.
        """
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompts:
            raise ValueError("no prompts given")
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {sorted(SAMPLERS)}, got {sampler!r}")
        if not (isinstance(guidance_scale, int | float) and guidance_scale >= 0 and guidance_scale < float("inf")):
            raise ValueError(f"guidance_scale must be a finite number >= 0, got {guidance_scale!r}")
        seeds = [seed + i for i in range(len(prompts))] if isinstance(seed, int) else [int(s) for s in seed]
        if len(seeds) != len(prompts):
            raise ValueError(f"{len(seeds)} seeds for {len(prompts)} prompts")
        shape = self.latent_shape(num_frames, height, width)
        device, dtype = self.dit.device, self.dit.dtype
        gens = [torch.Generator().manual_seed(s) for s in seeds]

        def noise(like: torch.Tensor) -> torch.Tensor:
            return torch.stack([torch.randn(like.shape[1:], generator=g) for g in gens]).to(like)

        embeds, mask = self.text_encoder(prompts)
        dit = noise_predictor(self.dit, self.diffusion, getattr(self.dit.config, "prediction_type", "epsilon"))
        cond = {"text_embeds": embeds.to(device, dtype), "text_mask": mask.to(device)}
        if guidance_scale == 1:  # the unconditional branch would cancel out: skip it

            def guided(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
                return dit(x, t, **cond)
        else:
            null_embeds, null_mask = self.text_encoder([negative_prompt] * len(prompts))
            uncond = {"text_embeds": null_embeds.to(device, dtype), "text_mask": null_mask.to(device)}
            guided = classifier_free_guidance(dit, guidance_scale, cond, uncond)

        def model_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # the DiT's dtype in, fp32 out
            return guided(x.to(dtype), t).float()

        x = noise(torch.empty((len(prompts), *shape), device=device))
        kwargs = {"noise": noise} if sampler in ("ddpm", "ddim") else {}
        return SAMPLERS[sampler](model_fn, x, self.diffusion, steps, progress=progress, **kwargs)

    @torch.no_grad()
    def __call__(self, prompts: str | Sequence[str], num_frames: int, height: int, width: int,
                 **kwargs) -> torch.Tensor:
        """Prompts -> videos `(B, 3, num_frames, height, width)` float32 in [-1, 1]. Keyword arguments
        as in :meth:`generate_latents`."""
        return decode_latents(self.vae, self.generate_latents(prompts, num_frames, height, width, **kwargs))
