"""Step time of DiT training with the frozen VAE and T5 run per step vs read from a latent cache.

    uv run benchmarks/latent_cache.py                 # CPU: tiny DiT, small VAE and T5, about a minute

Both arms run the same training step on the same clips (forward, IDDPM loss, backward, AdamW step):

- `encode`: each step encodes the batch with the frozen Slice VAE (posterior mean/std, a fresh sample)
  and the captions with the frozen T5 encoder, as `apps/train_dit` does without a cache;
- `cache`: each step draws a batch from an `ea_dit.latent_cache.LatentCache` built once from the same
  clips (building it is timed separately: it pays for itself after `build / saving` steps).

Steps alternate between the arms (median over `--steps` each), so load changes on a shared machine hit
both alike. Results go to `benchmarks/results/latent_cache-<device>.json`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from _results import save_results  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=17, help="video frames, 1 + 4k (default 17)")
    p.add_argument("--size", type=int, default=64, help="pixels (default 64)")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--clips", type=int, default=8, help="clips in the cache (default 8)")
    p.add_argument("--vae-channels", default="32,64,128,128", help="Slice VAE block_out_channels")
    p.add_argument("--t5-dim", type=int, default=256, help="T5 d_model (PixArt's T5-XXL: 4096)")
    p.add_argument("--t5-layers", type=int, default=4)
    p.add_argument("--steps", type=int, default=5, help="timed steps per arm")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    p.add_argument("--device", default=None)
    p.add_argument("--out-dir", default=None)
    return p.parse_args(argv)


def main(argv=None) -> None:
    a = parse_args(argv)
    from transformers import ByT5Tokenizer, T5Config, T5EncoderModel

    from ea_dit import T5TextEncoder, VideoDiT, VideoDiTConfig
    from ea_dit.diffusion import GaussianDiffusion
    from ea_dit.latent_cache import LatentCache, build_latent_cache
    from ea_dit.t2v import scale_latents
    from ea_vae import SliceVAE, SliceVAEConfig

    device = torch.device(a.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cpu":
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    channels = tuple(int(c) for c in a.vae_channels.split(","))
    vae = SliceVAE(SliceVAEConfig.tiny(block_out_channels=channels, latent_channels=4)).to(device).eval()
    vae.requires_grad_(False)
    t5 = T5EncoderModel(T5Config(vocab_size=384, d_model=a.t5_dim, d_kv=64, d_ff=2 * a.t5_dim, num_layers=a.t5_layers,
                                 num_heads=max(1, a.t5_dim // 64), feed_forward_proj="gated-gelu",
                                 is_encoder_decoder=False))
    text_encoder = T5TextEncoder(t5.eval(), ByT5Tokenizer())
    text_encoder.model.to(device)
    sc = vae.config.spatial_compression
    dit = VideoDiT(VideoDiTConfig.tiny(in_channels=4, caption_channels=a.t5_dim, sample_size=a.size // sc)).to(device)
    opt = torch.optim.AdamW(dit.parameters(), lr=1e-4)
    diffusion = GaussianDiffusion()
    g = torch.Generator().manual_seed(0)
    clips = [{"pixel_values": torch.rand(a.batch, 3, a.frames, a.size, a.size, generator=g) * 2 - 1,
              "caption": [f"clip {i * a.batch + j}: a red ball rolls over a striped floor" for j in range(a.batch)]}
             for i in range(a.clips // a.batch)]

    @torch.no_grad()
    def encode_video(video):
        posterior = vae.encode(video.to(device))
        return scale_latents(vae, posterior.mean), scale_latents(vae, posterior.std)

    @torch.no_grad()
    def encode_text(captions):
        return text_encoder(captions)

    def train_step(latents, embeds, mask):
        t = torch.randint(0, diffusion.num_timesteps, (latents.shape[0],), generator=g).to(device)
        noise = torch.randn(latents.shape, generator=g).to(device)
        xt = diffusion.q_sample(latents, t, noise)
        loss = diffusion.training_losses(dit(xt, t, embeds, mask).float(), latents, t, noise, xt)["loss"].mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def step_encode(i):
        batch = clips[i % len(clips)]
        mean, std = encode_video(batch["pixel_values"])
        embeds, mask = encode_text(batch["caption"])
        train_step(mean + std * torch.randn(mean.shape, generator=g).to(device), embeds, mask)

    def step_cache(cache):
        b = cache.batch(a.batch, generator=g)
        mean, std = b["mean"].to(device), b["std"].to(device)
        train_step(mean + std * torch.randn(mean.shape, generator=g).to(device), b["embeds"].to(device),
                   b["mask"].to(device))

    def timed(fn):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - t0

    with tempfile.TemporaryDirectory() as tmp:
        build_s = timed(lambda: build_latent_cache(clips, encode_video, encode_text, Path(tmp) / "cache"))
        cache = LatentCache(Path(tmp) / "cache")
        step_encode(0), step_cache(cache)  # warm-up
        times = {"encode": [], "cache": []}
        for i in range(a.steps):
            times["encode"].append(timed(lambda i=i: step_encode(i)))
            times["cache"].append(timed(lambda: step_cache(cache)))
    enc, cached = statistics.median(times["encode"]), statistics.median(times["cache"])
    saving = enc - cached
    results = {"seconds_per_step_encode": round(enc, 4), "seconds_per_step_cache": round(cached, 4),
               "speedup": round(enc / cached, 3), "saving_fraction": round(saving / enc, 3),
               "cache_build_seconds": round(build_s, 3),
               "break_even_steps": round(build_s / saving, 1) if saving > 0 else None}
    print(f"step: {enc:.4f} s encoding per step, {cached:.4f} s from the cache ({enc / cached:.2f}x); "
          f"cache built in {build_s:.2f} s")
    config = {k: v for k, v in vars(a).items() if k != "out_dir"}
    print(f"wrote {save_results('latent_cache', results, config, out_dir=a.out_dir)}")


if __name__ == "__main__":
    main()
