r"""Train the EasyAnimate video DiT (PixArt-alpha + motion module) on WebDataset shards.

    uv run apps/train_dit --data runs/demo/data/shards --vae runs/demo/vae/final \
        --text-encoder runs/demo/text_encoder --out runs/demo/dit

Each step encodes a bucketed batch of clips with the frozen Slice VAE (latents x scaling factor) and
their captions with the frozen T5 encoder (captions dropped to "" with --cfg-dropout for classifier-free
guidance), noises the latents and trains the DiT with the IDDPM hybrid loss (noise MSE + variance bound).
Noise, timesteps and caption dropout are drawn per sample from seeds of (seed, step, sample index), so
N processes with --batch-size B train exactly what one process does with N*B.

Stages (`--stage`, the paper's recipe; the `final/` of one is the `--dit` of the next): `image` (F = 1,
motion modules frozen; a PixArt-alpha checkpoint is adapted to the VAE's latent channels), `motion`
(motion modules and U-ViT skips only), `full` (everything).

Multi-GPU: `torchrun --nproc-per-node N apps/train_dit/__main__.py --parallel ddp|fsdp ...` (NCCL on GPUs,
gloo on the CPU; FSDP2 shards each transformer block). Only rank 0 writes logs, plots and samples.

Checkpoints (model, EMA, optimizer, data position per process, RNG) go to `<out>/checkpoints/` every
--save-every steps as sharded torch.distributed.checkpoint folders; a rerun with the same --out resumes
from the newest complete one (on any number of processes), and a different configuration in the same
--out is refused. At the end the EMA weights are saved to `<out>/final` (VideoDiT.from_pretrained
folder), with metrics.jsonl, TensorBoard events, loss plots and sample videos in `<out>/`.
"""

from __future__ import annotations

import copy
import resource
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ea_core.devices import DTYPES
from ea_data.batches import endless_batches, video_loader
from ea_data.progress import progress_bar
from ea_dit import T5TextEncoder, VideoDiT, VideoDiTConfig
from ea_dit.diffusion import GaussianDiffusion
from ea_dit.latent_cache import META_NAME, LatentCache, build_latent_cache
from ea_dit.lora import DEFAULT_TARGETS, add_lora, lora_parameters, merge_lora, save_lora
from ea_dit.t2v import TextToVideoPipeline, pixel_multiple, scale_latents
from ea_dit.training import (
    MetricsLog,
    plot_metrics,
    resume,
    save_checkpoint,
    write_run_config,
)
from ea_dit.training.cli import parse_config, run_trainer, start_run
from ea_dit.training.distributed import (
    all_gather_objects,
    all_reduce_mean,
    apply_fsdp,
    barrier,
    batch_offset,
    clip_grad_norm,
    full_state_dict,
    gradient_sync,
    randn_per_sample,
    sample_generators,
    wrap_ddp,
)
from ea_dit.training.optim import adamw, lr_factor, set_lr
from ea_dit.training.stages import STAGES, adapt_latent_channels, trainable_parameters
from ea_dit.training.validation import fixed_validation_loss
from ea_vae import SliceVAE
from ea_vae.video_io import save_videos

CACHE_DRAWS = 1 << 40  # generator index of latent-cache batch draws: apart from every sample's noise index

# settings that may change between a run and its resumption (everything else must match --out's config)
MAY_CHANGE = frozenset({"steps", "time_limit", "val_every", "log_every", "save_every", "sample_prompts", "sample_steps", "device", "dtype",
                        "batch_size", "grad_accum",
                        "parallel", "gradient_checkpointing", "attention_backend", "tensorboard", "num_workers"})


@dataclass
class TrainDiTConfig:
    data: str = "runs/demo/data/shards"  # folder of .tar shards (ea-data run / shard output)
    vae: str = "runs/demo/vae/final"
    text_encoder: str = "runs/demo/text_encoder"
    out: str = "runs/train_dit"
    dit: str | None = None  # pretrained VideoDiT or diffusers PixArtTransformer2DModel folder
    model: str = "tiny"  # size preset when --dit is not given: tiny | xl
    stage: str = "full"  # image | motion | full (the paper's stages)
    image_frames: bool = False  # image stage: also single frames of the videos (default: image samples only)
    steps: int = 100
    batch_size: int = 2  # per process and micro-batch
    grad_accum: int = 1  # micro-batches per optimiser step
    frames: int = 17
    frame_stride: int = 2
    clip_start: str = "random"  # random | centre: where each clip's frames are taken from
    size: int = 64  # pixels of the bucket base size (64 for the demo, 512 for real runs)
    resolution_schedule: str = ""  # e.g. "256:0,512:20000": base size from each step on (overrides --size)
    bucket_by: str = "aspect_ratio"  # aspect_ratio | token_length
    token_budget: int = 0  # token_length: pixels x frames of a full-budget sample (0: ea-data's default)
    image_video_ratio: float = 0.25  # image batches per video batch
    lr: float = 1e-4
    lr_schedule: str = "constant"  # constant | cosine (after warm-up)
    warmup_steps: int = 0
    weight_decay: float = 0.03
    grad_clip: float = 1.0
    ema_decay: float = 0.99
    cfg_dropout: float = 0.1
    parallel: str = "ddp"  # ddp | fsdp (under torchrun)
    attention_backend: str = "sdpa"
    gradient_checkpointing: bool = False
    dtype: str = "fp32"  # bf16 recommended on GPUs: autocast (ddp) or FSDP2's mixed-precision policy
    device: str = "auto"
    num_workers: int = 0
    seed: int = 0
    log_every: int = 5
    save_every: int = 50
    tensorboard: bool = True
    lora_rank: int = 0  # > 0: train LoRA adapters of this rank only (the base DiT frozen)
    lora_alpha: float = 0.0  # 0: the rank (adapter factor 1)
    lora_targets: tuple[str, ...] = ()  # module-name suffixes (default: attention and MLP projections)
    sample_prompts: tuple[str, ...] = ()
    sample_steps: int = 20  # 0: no samples at the end
    time_limit: float = 0.0  # seconds of training after which the run stops early and saves (0: none)
    latent_cache: str = ""  # folder of cached VAE latents + T5 embeddings (built from --data if missing)
    cache_passes: int = 2  # passes over --data when building --latent-cache (random frame windows vary)
    val_cache: str = ""  # latent cache of held-out clips: validation loss at fixed timesteps and noise
    val_every: int = 0  # steps between validation losses (0: only at the end when --val-cache is given)


def parse_args(argv=None) -> TrainDiTConfig:
    helps = {"model": "size preset when --dit is not given: tiny (CPU demo) or xl (PixArt-alpha XL/2)",
             "stage": "image: image samples (F = 1), motion modules frozen (adapts a PixArt checkpoint, latent "
                      "channels included); motion: motion modules + U-ViT skips only; full: everything",
             "image_frames": "image stage: also train on single frames of the videos (default: image samples only)",
             "resolution_schedule": "bucket base size by step, e.g. 256:0,512:20000 (overrides --size)",
             "bucket_by": "aspect_ratio: fixed batch size; token_length: batch sizes scaled to --token-budget",
             "parallel": "under torchrun: ddp (replicated) or fsdp (FSDP2 fully_shard per block)",
             "lora_rank": "train LoRA adapters of rank R on the attention and MLP projections (base frozen); "
                          "adapter-only weights go to <out>/lora.safetensors, final/ holds the merged model",
             "lora_targets": f"a module-name suffix to adapt (default: {', '.join(DEFAULT_TARGETS)})",
             "clip_start": "where each clip's frames are taken: random (seeded per sample and epoch) or centre",
             "sample_prompts": "a prompt to sample at the end (default: captions of the first batch)",
             "time_limit": "stop after this many seconds of training (checkpoint and final/ are written as at "
                           "--steps); 0: no limit",
             "latent_cache": "train from cached VAE latents and T5 embeddings in this folder (ea_dit.latent_cache): "
                             "built once from --data if missing, then no VAE or T5 runs per step",
             "val_cache": "a latent cache of held-out clips (ea_dit.latent_cache): logs val_mse of the EMA model "
                          "at fixed timesteps and noise (ea_dit.training.validation)"}
    cfg = parse_config(TrainDiTConfig, argv, "uv run apps/train_dit", __doc__, helps,
                       {"model": ("tiny", "xl"), "stage": STAGES, "parallel": ("ddp", "fsdp"),
                        "bucket_by": ("aspect_ratio", "token_length"), "clip_start": ("random", "centre"),
                        "lr_schedule": ("constant", "cosine"),
                        "attention_backend": ("sdpa", "xformers", "triton"), "dtype": tuple(DTYPES)})
    if cfg.stage == "motion" and not cfg.dit:
        # The output layer of a fresh DiT is zero: no gradient would reach the motion modules.
        raise SystemExit("error: --stage motion needs a pretrained DiT (--dit PATH, e.g. the image stage's final/)")
    if cfg.lora_rank < 0:
        raise SystemExit(f"error: --lora-rank must be >= 0, got {cfg.lora_rank}")
    for name in ("steps", "batch_size", "grad_accum", "log_every", "save_every"):
        if getattr(cfg, name) < 1:
            raise SystemExit(f"error: --{name.replace('_', '-')} must be >= 1, got {getattr(cfg, name)}")
    try:
        resolution_schedule(cfg)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    return cfg


def resolution_schedule(cfg: TrainDiTConfig) -> list[tuple[int, int]]:
    """`[(first step, base size), ...]` sorted by step, from --resolution-schedule (else `[(0, size)]`)."""
    if not cfg.resolution_schedule:
        return [(0, cfg.size)]
    out = []
    for part in cfg.resolution_schedule.split(","):
        try:
            size, step = (int(x) for x in part.split(":"))
        except ValueError:
            raise ValueError(f"--resolution-schedule {cfg.resolution_schedule!r}: expected SIZE:STEP pairs "
                             "separated by commas, e.g. 256:0,512:20000") from None
        if size < 1 or step < 0:
            raise ValueError(f"--resolution-schedule: bad entry {part!r} (size >= 1, step >= 0)")
        out.append((step, size))
    out.sort()
    if out[0][0] != 0:
        raise ValueError("--resolution-schedule must start at step 0, e.g. 256:0,512:20000")
    return out


def segment_at(schedule: list[tuple[int, int]], step: int) -> int:
    return max(i for i, (start, _) in enumerate(schedule) if start <= step)


def build_dit(cfg: TrainDiTConfig, latent_channels: int, caption_channels: int, sample_size: int):
    if cfg.dit:
        dit = adapt_latent_channels(VideoDiT.from_pretrained(cfg.dit), latent_channels)
    else:
        base = VideoDiTConfig.tiny if cfg.model == "tiny" else VideoDiTConfig
        dit = VideoDiT(base(in_channels=latent_channels, caption_channels=caption_channels,
                            sample_size=sample_size))
    if dit.config.caption_channels != caption_channels:
        raise ValueError(f"the DiT takes {dit.config.caption_channels}-channel text features but the text encoder "
                         f"makes {caption_channels}")
    dit.set_attention_backend(cfg.attention_backend)
    dit.enable_gradient_checkpointing(cfg.gradient_checkpointing)
    return dit


def train(cfg: TrainDiTConfig) -> Path:
    ctx, out = start_run(cfg, MAY_CHANGE)
    device, main = ctx.device, ctx.is_main
    vae = SliceVAE.from_pretrained(cfg.vae).to(device).eval().requires_grad_(False)
    text_encoder = T5TextEncoder.from_pretrained(cfg.text_encoder, device=device)
    caption_channels = text_encoder.model.config.d_model
    sc = vae.config.spatial_compression
    schedule = resolution_schedule(cfg)
    dit = build_dit(cfg, vae.config.latent_channels, caption_channels, schedule[-1][1] // sc).to(device)
    lora = None
    if cfg.lora_rank:
        lora = {"rank": cfg.lora_rank, "alpha": cfg.lora_alpha or cfg.lora_rank,
                "targets": tuple(cfg.lora_targets) or DEFAULT_TARGETS}
        add_lora(dit, lora["rank"], lora["targets"], lora["alpha"])
        params = lora_parameters(dit)
    else:
        params = trainable_parameters(dit, cfg.stage)
    if not params:
        raise ValueError(f"--stage {cfg.stage}: the DiT has no parameters to train (no motion modules?)")
    ema = copy.deepcopy(dit).eval().requires_grad_(False)
    fsdp = ctx.distributed and cfg.parallel == "fsdp"
    if fsdp:  # shard each transformer block (and the rest at the root); EMA sharded alike
        mp = DTYPES[cfg.dtype] if cfg.dtype != "fp32" else None
        apply_fsdp(dit, dit.blocks, param_dtype=mp)
        apply_fsdp(ema, ema.blocks)
        train_module = dit
    elif ctx.distributed:
        train_module = wrap_ddp(dit, ctx)
    else:
        train_module = dit
    params = [p for p in dit.parameters() if p.requires_grad]  # fully_shard replaced them with sharded ones
    pairs = [(pe, pm) for pe, pm in zip(ema.parameters(), dit.parameters()) if pm.requires_grad]
    opt = adamw(params, lr=cfg.lr, weight_decay=cfg.weight_decay, device=device)
    diffusion = GaussianDiffusion()
    frames = 1 if cfg.stage == "image" else cfg.frames
    # the paper's image stage trains on image data; --image-frames adds single frames of the videos
    kinds = ("image", "video") if cfg.stage != "image" or cfg.image_frames else ("image",)

    def make_loader(segment: int):
        return video_loader(cfg.data, batch_size=cfg.batch_size, frames=frames, stride=cfg.frame_stride,
                            clip_start=cfg.clip_start, size=schedule[segment][1], image_video_ratio=cfg.image_video_ratio, seed=cfg.seed,
                            num_workers=cfg.num_workers, size_multiple=pixel_multiple(dit, vae),
                            bucket_by=cfg.bucket_by, token_budget=cfg.token_budget or None, rank=ctx.rank,
                            world_size=ctx.world_size, kinds=kinds)

    cache = val = None
    if cfg.latent_cache:
        if len(schedule) > 1:
            raise ValueError("--latent-cache stores one resolution: it cannot be combined with --resolution-schedule")
        cache = open_latent_cache(cfg, vae, text_encoder, make_loader(0), main)
    if cfg.val_cache:
        val = LatentCache(cfg.val_cache)

    ckpt_dir = out / "checkpoints"
    modules = {"dit": dit, "ema": ema}
    state = resume(ckpt_dir, modules, {"opt": opt})
    step = state["step"] if state else 0
    segment = segment_at(schedule, step)
    loader = make_loader(segment)
    if state and state.get("segment", 0) == segment:
        loaders = state.get("loaders") or [state.get("loader")]
        if len(loaders) == ctx.world_size:
            loader.load_state_dict(loaders[ctx.rank])
        elif main:  # the data position is per process: continue with the next epoch
            print(f"resume: saved on {len(loaders)} process(es), now {ctx.world_size}: the data loader starts "
                  f"epoch {loaders[0]['epoch'] + 1}")
        if len(loaders) != ctx.world_size:
            loader.set_epoch(loaders[0]["epoch"] + 1)
    # Resume has decided: from here on the run folder may be written.
    if main:
        write_run_config(out, asdict(cfg))
    log = MetricsLog(out / "metrics.jsonl", resume_step=step, tensorboard=cfg.tensorboard, enabled=main)
    autocast = torch.autocast(device.type, dtype=DTYPES[cfg.dtype], enabled=cfg.dtype != "fp32" and not fsdp)
    first_captions: list[str] = []
    # progress_bar: redrawn at most every 30 s when stderr is a log, not a terminal; postfix updates do
    # not force a redraw (refresh=False), or each logged step would print a line.
    bar = progress_bar(total=cfg.steps, initial=step, desc="train_dit", unit="step", disable=not main)
    dit.train()
    batches = endless_batches(loader) if cache is None else None
    window = {"t": time.perf_counter(), "samples": 0.0, "tokens": 0.0}
    started = None  # the time limit counts training, not the data loader's start-up
    if val is not None and step == 0 and main:
        log.write(0, **validation(ema, diffusion, val))
    while step < cfg.steps:
        new_segment = segment_at(schedule, step)
        if new_segment != segment and cache is None:  # progressive resolution: next base size from this step on
            segment, loader = new_segment, make_loader(new_segment)
            batches = endless_batches(loader)
        started = started or time.perf_counter()
        set_lr(opt, cfg.lr * lr_factor(step, cfg.warmup_steps, cfg.steps, cfg.lr_schedule))
        opt.zero_grad(set_to_none=True)
        totals = torch.zeros(5, dtype=torch.float64)  # loss, mse, vb (sums over samples), samples, tokens
        seen = 0  # samples of this step's global batch before the current micro-batch
        for micro in range(cfg.grad_accum):
            if cache is None:
                batch = next(batches)
            else:  # a random cached batch, drawn from (seed, step, micro-batch, process) like the noise
                slot = CACHE_DRAWS + micro * ctx.world_size + ctx.rank
                batch = cache.batch(cfg.batch_size, sample_generators(cfg.seed, step, slot, 1)[0])
            captions = list(batch["caption"])
            first_captions = first_captions or captions
            b = len(captions)
            offset, total = batch_offset(b, device)  # this process's samples in the step's global batch
            gens = sample_generators(cfg.seed, step, seen + offset, b)
            seen += total
            with torch.no_grad():
                if cache is None:
                    posterior = vae.encode(batch["pixel_values"].to(device))
                    mean, std = scale_latents(vae, posterior.mean), scale_latents(vae, posterior.std)
                else:  # cached mean and std are already scaled
                    mean, std = batch["mean"].to(device), batch["std"].to(device)
                eps = randn_per_sample(mean.shape[1:], gens, device)
                latents = mean + std * eps
                drop = [torch.rand((), generator=g).item() < cfg.cfg_dropout for g in gens]
                dropped = ["" if d else c for c, d in zip(captions, drop)]
                if cache is None:
                    embeds, mask = text_encoder(dropped)
                else:
                    embeds, mask = (x.to(device) for x in cache.text(dropped))
            t = torch.stack([torch.randint(0, diffusion.num_timesteps, (), generator=g) for g in gens]).to(device)
            noise = randn_per_sample(latents.shape[1:], gens, device)
            xt = diffusion.q_sample(latents, t, noise)
            with gradient_sync(train_module, micro == cfg.grad_accum - 1), autocast:
                pred = train_module(xt, t, embeds, mask)
                losses = diffusion.training_losses(pred.float(), latents, t, noise, xt, dit.config.prediction_type)
                (losses["loss"].mean() / cfg.grad_accum).backward()
            totals += torch.tensor([losses["loss"].sum().item(), losses["mse"].sum().item(),
                                    losses["vb"].sum().item(), b, b * batch["num_tokens"]], dtype=torch.float64)
        grad_norm = clip_grad_norm(params, cfg.grad_clip)
        opt.step()
        with torch.no_grad():
            for pe, pm in pairs:
                pe.lerp_(pm, 1 - cfg.ema_decay)
        totals = all_reduce_mean(totals.to(device)).cpu() * ctx.world_size
        window["samples"] += totals[3].item()
        window["tokens"] += totals[4].item()
        step += 1
        bar.update(1)
        out_of_time = cfg.time_limit > 0 and all_reduce_mean(
            torch.tensor([float(time.perf_counter() - started >= cfg.time_limit)], device=device)).item() > 0
        if out_of_time:
            print(f"train_dit: --time-limit {cfg.time_limit:g} s reached at step {step}")
        last = step == cfg.steps or out_of_time
        if val is not None and main and (last or (cfg.val_every and step % cfg.val_every == 0)):
            log.write(step, **validation(ema, diffusion, val))
        if step % cfg.log_every == 0 or last:
            n, elapsed = totals[3].item(), time.perf_counter() - window["t"]
            log.write(step, loss=totals[0].item() / n, mse=totals[1].item() / n, vb=totals[2].item() / n,
                      grad_norm=grad_norm.item(), lr=opt.param_groups[0]["lr"],
                      samples_per_s=window["samples"] / elapsed, tokens_per_s=window["tokens"] / elapsed,
                      peak_mem_gib=peak_memory_gib(device), base_size=schedule[segment][1])
            window = {"t": time.perf_counter(), "samples": 0.0, "tokens": 0.0}
            bar.set_postfix(loss=f"{totals[0].item() / n:.4f}", refresh=False)
        if step % cfg.save_every == 0 or last:
            save_checkpoint(ckpt_dir, step, modules, {"opt": opt},
                            {"loaders": all_gather_objects(loader.state_dict()), "segment": segment,
                             "world_size": ctx.world_size, "config": asdict(cfg)})
        if out_of_time:
            break
    bar.close()
    log.close()
    final = export_dit(ema, out / "final", main, lora, out / "lora.safetensors")
    if main:
        keys = ["loss", "mse", "vb", "grad_norm", "lr"] + (["val_mse"] if val is not None else [])
        plot_metrics(out / "metrics.jsonl", out / "loss.png", keys=keys)
        if cfg.sample_steps > 0:
            model = VideoDiT.from_pretrained(final).to(device).eval()
            prompts = list(cfg.sample_prompts) or first_captions[:2] or ["a red circle moves over a striped background"]
            size = schedule[-1][1]
            videos = TextToVideoPipeline(model, vae, text_encoder)(prompts, frames, size, size,
                                                                   steps=cfg.sample_steps, seed=cfg.seed)
            save_videos(videos, prompts, out / "samples", fps=8)
        print(f"saved {final}; samples in {out / 'samples'}; loss plot {out / 'loss.png'}")
    barrier()
    return Path(final)


def open_latent_cache(cfg: TrainDiTConfig, vae, text_encoder, loader, main: bool):
    """The --latent-cache folder, built from `loader` (cfg.cache_passes epochs) by rank 0 when missing."""
    path = Path(cfg.latent_cache)
    if not (path / META_NAME).exists() and main:
        print(f"train_dit: building the latent cache {path} ({cfg.cache_passes} pass(es) over {cfg.data})")
        device = next(vae.parameters()).device

        def encode_video(video):
            posterior = vae.encode(video.to(device))
            return scale_latents(vae, posterior.mean), scale_latents(vae, posterior.std)

        build_latent_cache(loader, encode_video, text_encoder, path, passes=cfg.cache_passes,
                           extra_meta={"vae": str(cfg.vae), "text_encoder": str(cfg.text_encoder),
                                       "frames": cfg.frames, "frame_stride": cfg.frame_stride, "size": cfg.size,
                                       "scaling_factor": vae.config.scaling_factor})
    barrier()
    return LatentCache(path)


def validation(model, diffusion, val) -> dict[str, float]:
    """Validation loss of `model` on every clip of the latent cache `val` (posterior means, fixed noise)."""
    latents = torch.cat([g["mean"] for g in val.groups]) if len(val.groups) == 1 else None
    if latents is None:
        raise ValueError("--val-cache must hold clips of one shape")
    embeds, mask = val.text([val.captions[i] for i in val.groups[0]["caption_index"].tolist()])
    was_training = model.training
    model.eval()
    out = fixed_validation_loss(model, diffusion, latents, embeds, mask,
                               prediction_type=model.config.prediction_type)
    model.train(was_training)
    return out


def export_dit(model, path: Path, main: bool, lora: dict | None = None, lora_path: Path | None = None) -> Path:
    """Save `model` (plain, DDP-owned or FSDP-sharded) as a `VideoDiT.from_pretrained` folder (rank 0).

    With LoRA adapters, the adapters alone go to `lora_path` and the folder holds the merged model.
    """
    state = full_state_dict(model)  # collective; complete on rank 0
    if main:
        plain = VideoDiT(copy.deepcopy(model.config))
        if lora:
            add_lora(plain, lora["rank"], lora["targets"], lora["alpha"])
        plain.load_state_dict(state)
        if lora:
            save_lora(plain, lora_path, lora["rank"], lora["alpha"], lora["targets"])
            merge_lora(plain)
        plain.save_pretrained(path)
    barrier()
    return path


def peak_memory_gib(device: torch.device) -> float:
    """Peak accelerator memory allocated (CUDA), else the process's peak resident memory."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main(argv=None) -> int:
    cfg = parse_args(argv)
    return run_trainer(train, cfg, {"--vae": cfg.vae, "--data": cfg.data},
                       " (run `uv run apps/demo` to build the demo data and models)")


if __name__ == "__main__":
    raise SystemExit(main())
