"""Held-out evaluation of the demo run: VAE reconstruction PSNR, validation latents, generated-clip match rates.

Held-out clips are drawn the way the training data is made (rendered at 128 px, scaled to the demo
resolution with area averaging), from `HELD_OUT` triples that no training scene shows.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import torch

from ea_core.devices import resolve_device
from ea_data.batches import video_loader
from ea_data.clip_eval import evaluate_clip, match_rates
from ea_data.synthetic import HELD_OUT, demo_caption, render_demo_clip
from ea_dit import T5TextEncoder, VideoDiT
from ea_dit.latent_cache import build_latent_cache
from ea_dit.t2v import TextToVideoPipeline
from ea_vae import SliceVAE
from ea_vae.metrics import psnr, ssim
from ea_vae.scaling import fit_scaling_factor

VAL_SEEDS = (100, 101)  # drawing seeds of the held-out validation clips (2 per triple)


def held_out_clips(res: int, frames: int, stride: int = 1, seeds=VAL_SEEDS, triples_in=HELD_OUT
                   ) -> tuple[torch.Tensor, list[tuple[str, str, str]]]:
    """Ground-truth clips of every (colour, shape, direction) triple in `triples_in` (default: HELD_OUT), one
    per seed: `(N, 3, frames, res, res)` in [-1, 1] (every `stride`-th frame of a scene, like the training
    clips) and their triples."""
    clips, triples = [], []
    for seed in seeds:
        for i, t in enumerate(triples_in):
            hi = render_demo_clip(*t, num_frames=1 + (frames - 1) * stride, size=128, seed=seed * 1000 + i)[::stride]
            lo = np.stack([cv2.resize(f, (res, res), interpolation=cv2.INTER_AREA) for f in hi])
            clips.append(torch.from_numpy(lo).permute(3, 0, 1, 2).float() / 127.5 - 1)
            triples.append(t)
    return torch.stack(clips), triples


@torch.no_grad()
def fit_vae_scaling(vae_path: Path, shards: Path, res: int, frames: int, stride: int = 1, batches: int = 8) -> float:
    """Measure the trained VAE's latent scaling factor on training clips (ea_vae.scaling) and save it."""
    vae = SliceVAE.from_pretrained(vae_path).eval()
    loader = video_loader(shards, batch_size=16, frames=frames, stride=stride, size=res, image_video_ratio=0, seed=0,
                          num_workers=0)
    videos = (b["pixel_values"] for _, b in zip(range(batches), loader))
    vae.config.scaling_factor = fit_scaling_factor(vae, videos, torch.Generator().manual_seed(0))
    vae.save_pretrained(vae_path)
    return vae.config.scaling_factor


@torch.no_grad()
def encode_held_out(vae_path: Path, text_encoder_path: Path, val_cache: Path, assets: Path, res: int, frames: int,
                    stride: int, device: str, shards: Path | None = None) -> dict:
    """VAE PSNR / SSIM / direction kept on held-out clips; writes their latents + embeddings as `val_cache`.

    First fits the VAE's scaling factor on the training clips in `shards` (default: the run folder's
    `data/shards` next to `vae/final`), see `fit_vae_scaling`.
    """
    shards = shards if shards is not None else Path(vae_path).parent.parent / "data" / "shards"
    scaling = fit_vae_scaling(vae_path, shards, res, frames, stride)
    dev = resolve_device(device)
    vae = SliceVAE.from_pretrained(vae_path).to(dev).eval()
    text_encoder = T5TextEncoder.from_pretrained(text_encoder_path, device=dev)
    x, triples = held_out_clips(res, frames, stride)
    posterior = vae.encode(x.to(dev))
    recon = vae.decode(posterior.mode()).clamp(-1, 1).cpu()
    results = [evaluate_clip(r, c, d) for r, (c, _, d) in zip(recon, triples)]
    truth = [evaluate_clip(v, c, d) for v, (c, _, d) in zip(x, triples)]
    assets.mkdir(parents=True, exist_ok=True)
    np.save(assets / "vae_recon.npy", torch.stack([x[:4], recon[:4]]).numpy().astype(np.float16))
    sf = vae.config.scaling_factor
    batches = [{"pixel_values": x, "caption": [demo_caption(*t) for t in triples]}]
    build_latent_cache(batches, lambda v: (posterior.mean * sf, posterior.std * sf), text_encoder, val_cache,
                       extra_meta={"what": "held-out demo clips", "frames": frames, "size": res})
    return {"psnr": round(psnr(recon, x).mean().item(), 2), "scaling_factor": scaling, "ssim": round(ssim(recon, x).mean().item(), 4),
            "clips": len(x), "frames": frames, "size": res,
            "reconstruction_match": match_rates(results), "ground_truth_match": match_rates(truth)}


@torch.no_grad()
def evaluate_run(out: Path, seeds=(0, 1), device: str = "auto", sampler: str = "ddim", steps: int = 25,
                 guidance_scale: float = 4.0, save: bool = False, dit: Path | None = None) -> dict:
    """Generate every HELD_OUT prompt once per seed from the run folder's models and score the clips.
    `dit` replaces the run's DiT (e.g. one post-trained with reward backpropagation)."""
    run = json.loads((out / "run.json").read_text())
    dev = resolve_device(device)
    dit = VideoDiT.from_pretrained(dit if dit is not None else out / run["dit"]).to(dev).eval()
    vae = SliceVAE.from_pretrained(out / run["vae"]).to(dev).eval()
    text_encoder = T5TextEncoder.from_pretrained(out / run["text_encoder"], device=dev)
    pipe = TextToVideoPipeline(dit, vae, text_encoder)
    prompts = [demo_caption(*t) for t in HELD_OUT]
    clips, videos = [], []
    for seed in seeds:  # prompt i of seed s starts from the noise of seed 1000 s + i
        v = pipe(prompts, run["frames"], run["height"], run["width"], steps=steps, guidance_scale=guidance_scale,
                 sampler=sampler, seed=[1000 * seed + i for i in range(len(prompts))]).cpu()
        videos.append(v)
        for video, (c, s, d), p in zip(v, HELD_OUT, prompts):
            m = evaluate_clip(video, c, d)
            clips.append({"prompt": p, "color": c, "shape": s, "direction": d, "seed": seed,
                          "measured_direction": m["direction"], "color_match": m["color_match"],
                          "direction_match": m["direction_match"], "color_fraction": round(m["color_fraction"], 4),
                          "speed": round(m["speed"], 4)})
    if save:
        assets = out / "report_assets"
        assets.mkdir(parents=True, exist_ok=True)
        np.save(assets / "samples.npy", torch.stack(videos).numpy().astype(np.float16))  # (S, 16, 3, F, H, W)
    return {"rates": match_rates(clips), "clips": clips}
