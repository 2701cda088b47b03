r"""Train the EasyAnimate video DiT (PixArt-alpha + motion module) on WebDataset shards.

    uv run apps/train_dit --data runs/demo/data/shards --vae runs/demo/vae/final \
        --text-encoder runs/demo/text_encoder --out runs/demo/dit

Each step encodes a bucketed batch of clips with the frozen Slice VAE (latents x scaling factor) and
their captions with the frozen T5 encoder (captions dropped to "" with --cfg-dropout for classifier-free
guidance), noises the latents and trains the DiT with the IDDPM hybrid loss (noise MSE + variance bound).
`--train motion` trains only the motion modules (EasyAnimate V1 stage 2); `--train all` everything.
Checkpoints (model, EMA, optimizer, data position, RNG) go to `<out>/checkpoints/` every --save-every
steps, and a rerun with the same --out resumes from the newest one. At the end the EMA weights are saved
to `<out>/final` (VideoDiT.from_pretrained folder), with loss plots and sample videos in `<out>/`.
"""

from __future__ import annotations

import copy
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _shared import (  # noqa: E402
    DTYPES,
    LossLog,
    endless_batches,
    parse_config,
    plot_metrics,
    resume,
    save_checkpoint,
    save_videos,
    start_run,
    video_loader,
)


@dataclass
class TrainDiTConfig:
    data: str = "runs/demo/data/shards"  # folder of .tar shards (ea-data run / shard output)
    vae: str = "runs/demo/vae/final"
    text_encoder: str = "runs/demo/text_encoder"
    out: str = "runs/train_dit"
    dit: str | None = None  # pretrained VideoDiT or diffusers PixArtTransformer2DModel folder
    model: str = "tiny"  # size preset when --dit is not given: tiny | xl
    train: str = "all"  # all | motion
    steps: int = 100
    batch_size: int = 2
    frames: int = 9  # video frames per clip, 1 + 4k
    frame_stride: int = 2
    size: int = 64  # pixels of the bucket base size (64 for the demo, 512 for real runs)
    image_video_ratio: float = 0.25  # image batches per video batch
    lr: float = 1e-4
    weight_decay: float = 0.03
    grad_clip: float = 1.0
    ema_decay: float = 0.99
    cfg_dropout: float = 0.1
    attention_backend: str = "sdpa"
    gradient_checkpointing: bool = False
    dtype: str = "fp32"  # autocast dtype on CUDA: bf16 recommended
    device: str = "auto"
    num_workers: int = 0
    seed: int = 0
    log_every: int = 5
    save_every: int = 50
    sample_prompts: tuple[str, ...] = ()
    sample_steps: int = 20  # 0: no samples at the end


def parse_args(argv=None) -> TrainDiTConfig:
    helps = {"model": "size preset when --dit is not given: tiny (CPU demo) or xl (PixArt-alpha XL/2)",
             "train": "all: every parameter; motion: only the motion modules (V1 stage 2)",
             "sample_prompts": "a prompt to sample at the end (default: captions of the first batch)"}
    cfg = parse_config(TrainDiTConfig, argv, "uv run apps/train_dit", __doc__, helps,
                       {"model": ("tiny", "xl"), "train": ("all", "motion"),
                        "attention_backend": ("sdpa", "xformers", "triton"), "dtype": tuple(DTYPES)})
    if cfg.train == "motion" and not cfg.dit:
        # The output layer of a fresh DiT is zero: no gradient would reach the motion modules.
        raise SystemExit("error: --train motion needs a pretrained DiT (--dit PATH, e.g. a PixArt folder)")
    return cfg


def build_dit(cfg: TrainDiTConfig, latent_channels: int, caption_channels: int, sample_size: int):
    from ea_dit import VideoDiT, VideoDiTConfig

    if cfg.dit:
        dit = VideoDiT.from_pretrained(cfg.dit)
    else:
        base = VideoDiTConfig.tiny if cfg.model == "tiny" else VideoDiTConfig
        dit = VideoDiT(base(in_channels=latent_channels, caption_channels=caption_channels,
                            sample_size=sample_size))
    if dit.config.in_channels != latent_channels:
        raise ValueError(f"the DiT takes {dit.config.in_channels} latent channels but the VAE makes {latent_channels}")
    dit.set_attention_backend(cfg.attention_backend)
    dit.enable_gradient_checkpointing(cfg.gradient_checkpointing)
    return dit


def train(cfg: TrainDiTConfig) -> Path:
    from tqdm import tqdm

    from ea_dit import T5TextEncoder
    from ea_dit.diffusion import GaussianDiffusion
    from ea_dit.t2v import TextToVideoPipeline, encode_latents, pixel_multiple
    from ea_vae import SliceVAE

    device, out = start_run(cfg)
    vae = SliceVAE.from_pretrained(cfg.vae).to(device).eval().requires_grad_(False)
    text_encoder = T5TextEncoder.from_pretrained(cfg.text_encoder, device=device)
    caption_channels = text_encoder.model.config.d_model
    sc = vae.config.spatial_compression
    dit = build_dit(cfg, vae.config.latent_channels, caption_channels, cfg.size // sc).to(device)
    ema = copy.deepcopy(dit).eval().requires_grad_(False)
    params = dit.motion_module_parameters() if cfg.train == "motion" else list(dit.parameters())
    if not params:
        raise ValueError("--train motion but the DiT has no motion modules")
    dit.requires_grad_(False)
    for q in params:
        q.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    diffusion = GaussianDiffusion()
    loader = video_loader(cfg.data, batch_size=cfg.batch_size, frames=cfg.frames, stride=cfg.frame_stride,
                          size=cfg.size, image_video_ratio=cfg.image_video_ratio, seed=cfg.seed,
                          num_workers=cfg.num_workers, size_multiple=pixel_multiple(dit, vae))

    ckpt_dir = out / "checkpoints"
    step = resume(ckpt_dir, {"dit": dit, "ema": ema}, {"opt": opt}, loader)
    log = LossLog(out / "metrics.jsonl", resume_step=step)
    autocast = torch.autocast(device.type, dtype=DTYPES[cfg.dtype], enabled=cfg.dtype != "fp32")
    first_captions: list[str] = []
    bar = tqdm(total=cfg.steps, initial=step, desc="train_dit", unit="step")
    dit.train()
    for batch in endless_batches(loader) if step < cfg.steps else ():
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)  # per step: resume-exact
        video, captions = batch["pixel_values"].to(device), list(batch["caption"])
        first_captions = first_captions or captions
        with torch.no_grad():
            latents = encode_latents(vae, video, g)
            drop = torch.rand(len(captions), generator=g) < cfg.cfg_dropout
            embeds, mask = text_encoder(["" if d else c for c, d in zip(captions, drop)])
        t = torch.randint(0, diffusion.num_timesteps, (latents.shape[0],), generator=g).to(device)
        noise = torch.randn(latents.shape, generator=g).to(device)
        xt = diffusion.q_sample(latents, t, noise)
        with autocast:
            pred = dit(xt, t, embeds, mask)
        losses = diffusion.training_losses(pred.float(), latents, t, noise, xt)
        loss = losses["loss"].mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), dit.parameters()):
                pe.lerp_(pm, 1 - cfg.ema_decay)
        step += 1
        bar.update(1)
        if step % cfg.log_every == 0 or step == cfg.steps:
            log.write(step, loss=loss.item(), mse=losses["mse"].mean().item(),
                      vb=losses["vb"].mean().item(), grad_norm=grad_norm.item())
            bar.set_postfix(loss=f"{loss.item():.4f}")
        if step % cfg.save_every == 0 or step == cfg.steps:
            save_checkpoint(ckpt_dir, step, {"dit": dit, "ema": ema}, {"opt": opt},
                            {"loader": loader.state_dict(), "config": asdict(cfg)})
        if step >= cfg.steps:
            break
    bar.close()
    log.close()
    final = ema.save_pretrained(out / "final")
    plot_metrics(out / "metrics.jsonl", out / "loss.png", keys=["loss", "mse", "vb", "grad_norm"])
    if cfg.sample_steps > 0:
        prompts = list(cfg.sample_prompts) or first_captions[:2] or ["a red circle moves over a striped background"]
        videos = TextToVideoPipeline(ema, vae, text_encoder)(prompts, cfg.frames, cfg.size, cfg.size,
                                                             steps=cfg.sample_steps, seed=cfg.seed)
        save_videos(videos, prompts, out / "samples", fps=8)
    print(f"saved {final}; samples in {out / 'samples'}; loss plot {out / 'loss.png'}")
    return Path(final)


def main(argv=None) -> int:
    cfg = parse_args(argv)
    for name in ("vae", "data"):
        if not Path(getattr(cfg, name)).exists():
            print(f"error: --{name} {getattr(cfg, name)} does not exist (run `uv run apps/demo` to build "
                  f"the demo data and models)", file=sys.stderr)
            return 2
    train(cfg)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
