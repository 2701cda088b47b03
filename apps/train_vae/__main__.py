r"""Train the Slice VAE on WebDataset shards with L1 + perceptual + KL + hinge-GAN losses.

    uv run apps/train_vae --data runs/demo/data/shards --out runs/demo/vae

Follows the EasyAnimate VAE recipe (Adam, betas (0.5, 0.9), lr 1e-4, KL weight 1e-6, discriminators
from --disc-start with an adaptive weight); `--stage decoder` freezes the encoder (the paper's second
stage) and `--slicing shared` trains through the sliced, feature-sharing decoder. The perceptual loss needs LPIPS/VGG weights from a local file (--perceptual-weights); without
them it is switched off rather than run with random weights. Checkpoints (VAE, discriminators,
optimizers, data position, RNG) go to `<out>/checkpoints/` (torch.distributed.checkpoint) and a rerun
with the same --out resumes from the newest complete one. Under `torchrun --nproc-per-node N` each
process trains on its own shards and gradients are averaged over the processes: `--parallel ddp`
replicates the VAE, `--parallel fsdp` shards its blocks with FSDP2 (`fully_shard` per encoder / decoder
block; the thin input / output layers, among them the decoder's output weight that the GAN's adaptive
weight differentiates, stay whole); the discriminators and the perceptual net are replicated. Only
rank 0 writes logs, plots and samples.
At the end the VAE is saved to `<out>/final` (SliceVAE.from_pretrained folder), with a loss plot and
reconstructions (input | output side by side, mp4 + gif) and their PSNR/SSIM in `<out>/`.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ea_core.atomic import atomic_write_json
from ea_data.batches import endless_batches, video_loader
from ea_data.progress import progress_bar
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
    all_reduce_gradients,
    all_reduce_mean,
    apply_fsdp,
    barrier,
    batch_offset,
    clip_grad_norm,
    full_state_dict,
    randn_per_sample,
    sample_generators,
)
from ea_dit.training.optim import SCHEDULES, lr_factor, parse_betas, set_lr
from ea_vae import SliceVAE, SliceVAEConfig
from ea_vae.losses import VAELoss, VAELossConfig, last_decoder_weight, object_weights
from ea_vae.metrics import psnr, ssim
from ea_vae.video_io import tensor_to_frames, write_video

MAY_CHANGE = frozenset({"steps", "time_limit", "log_every", "save_every", "device", "num_workers", "tensorboard", "parallel",
                        "batch_size", "min_steps"})


@dataclass
class TrainVAEConfig:
    data: str = "runs/demo/data/shards"  # folder of .tar shards (ea-data output)
    out: str = "runs/train_vae"
    vae: str | None = None  # start from a SliceVAE / diffusers AutoencoderKLMagvit folder
    model: str = "tiny"  # size preset when --vae is not given: tiny | base (the released V5.1 layout)
    latent_channels: int = 4
    channels: str = ""  # block_out_channels override, e.g. "16,16,32,32" (empty: the preset's)
    steps: int = 100
    batch_size: int = 2
    frames: int = 9
    frame_stride: int = 1
    clip_start: str = "random"  # random | centre: where each clip's frames are taken from
    size: int = 64
    image_video_ratio: float = 0.25  # image batches per video batch
    lr: float = 1e-4
    adam_betas: str = "0.5,0.9"  # both optimisers' Adam (beta1, beta2); the reference's GAN-style default
    lr_schedule: str = "constant"  # constant | cosine | wsd (after warm-up; to 0 at the end of the run)
    decay_fraction: float = 0.2  # wsd: the last fraction of the run over which the LR decays to 0
    warmup_steps: int = 0
    kl_weight: float = 1e-6
    disc_start: int = 50001
    perceptual_weights: str | None = None  # LPIPS weight file(s), comma separated
    stage: str = "full"  # full | decoder (encoder frozen)
    slicing: str = "none"  # none | streaming | shared: decode in latent slices while training
    parallel: str = "ddp"  # under torchrun: ddp (replicated) or fsdp (FSDP2, sharded per block)
    grad_clip: float = 1.0
    device: str = "auto"
    num_workers: int = 0
    seed: int = 0
    log_every: int = 5
    save_every: int = 50
    tensorboard: bool = True
    time_limit: float = 0.0  # seconds of training after which the run stops early and saves (0: none)
    min_steps: int = 0  # with --time-limit: train at least this many steps, however long they take
    posterior_logvar_init: float = 0.0  # fresh runs: start the posterior's log-variance here (0: as initialised)
    object_weight: float = 0.0  # extra reconstruction weight on pixels unlike their frame's median colour


def parse_args(argv=None) -> TrainVAEConfig:
    helps = {"model": "size preset when --vae is not given: tiny (CPU demo) or base (EasyAnimate V5.1 layout)",
             "disc_start": "step at which the discriminators switch on (default 50001, as the reference)",
             "perceptual_weights": "LPIPS VGG16 trunk and heads, local file(s) comma separated; "
                                   "without it the perceptual term is off"}
    helps["stage"] = "full: encoder and decoder; decoder: the encoder frozen (fine-tune the decoder)"
    helps["slicing"] = "decode in one-latent slices while training (shared: the paper's feature sharing)"
    helps["parallel"] = ("under torchrun: ddp (the VAE replicated, gradients averaged) or fsdp (FSDP2 fully_shard per "
                         "encoder / decoder block: parameters, gradients and optimizer state split over processes)")
    helps["object_weight"] = ("reconstruction weight 1 + W on pixels whose colour differs from their frame's median "
                              "(small objects over a background, ea_vae.losses.object_weights); 0: off")
    helps["lr_schedule"] = ("after --warmup-steps: constant; cosine decay to 0; or wsd (warm-up, stable, decay: "
                            "constant, then a linear decay to 0 over the last --decay-fraction of the run). Both "
                            "optimisers. The run ends at --steps or, with --time-limit, at the time limit, "
                            "whichever comes first: the decay follows the one further along")
    helps["adam_betas"] = "Adam (beta1,beta2) of both optimisers (default 0.5,0.9, as the reference's GAN training)"
    helps["decay_fraction"] = "wsd: the last fraction of the run over which the LR decays to 0 (default 0.2)"
    helps["posterior_logvar_init"] = ("a fresh run (not a resume) first sets the posterior's log-variance bias to "
                                      "this (SliceVAE.init_posterior_logvar; e.g. -6: std ~0.05 instead of ~1, so "
                                      "reconstructions improve from the first steps); 0: leave the VAE as it is")
    helps["time_limit"] = "stop after this many seconds of training (checkpoint and final/ as at --steps); 0: none"
    helps["min_steps"] = ("with --time-limit: train at least this many steps (a slow machine takes longer instead of "
                          "stopping early); the LR schedule then follows whichever of time and these steps is behind")
    return parse_config(TrainVAEConfig, argv, "uv run apps/train_vae", __doc__, helps,
                        {"model": ("tiny", "base"), "stage": ("full", "decoder"), "clip_start": ("random", "centre"),
                         "slicing": ("none", "streaming", "shared"), "parallel": ("ddp", "fsdp"),
                         "lr_schedule": SCHEDULES})


def train(cfg: TrainVAEConfig) -> Path:
    ctx, out = start_run(cfg, MAY_CHANGE)
    device, main = ctx.device, ctx.is_main
    if cfg.vae:
        vae = SliceVAE.from_pretrained(cfg.vae)
    else:
        preset = SliceVAEConfig.tiny if cfg.model == "tiny" else SliceVAEConfig
        overrides = {"block_out_channels": tuple(int(c) for c in cfg.channels.split(","))} if cfg.channels else {}
        vae = SliceVAE(preset(latent_channels=cfg.latent_channels, **overrides))
    if cfg.posterior_logvar_init:  # a resume below loads the trained bias over it
        vae.init_posterior_logvar(cfg.posterior_logvar_init)
    vae = vae.to(device).train()
    if cfg.slicing != "none":
        vae.enable_slicing(scheme=cfg.slicing)
    weights = tuple(cfg.perceptual_weights.split(",")) if cfg.perceptual_weights else None
    if weights is None and main:
        print("train_vae: no --perceptual-weights given: the perceptual (LPIPS) term is off")
    loss_cfg = VAELossConfig(kl_weight=cfg.kl_weight, disc_start=cfg.disc_start, perceptual_weights=weights,
                             perceptual_weight=1.0 if weights else 0.0,
                             disc_norm_groups=8 if cfg.model == "tiny" else 32,
                             disc_2d_channels=16 if cfg.model == "tiny" else 64,
                             disc_3d_channels=(16, 32, 32) if cfg.model == "tiny" else (64, 128, 256))
    loss_fn = VAELoss(loss_cfg).to(device)
    if cfg.stage == "decoder":  # the latent space stays fixed: encoder and its quant_conv frozen
        vae.encoder.requires_grad_(False)
        vae.quant_conv.requires_grad_(False)
    last_layer = last_decoder_weight(vae)
    fsdp = ctx.distributed and cfg.parallel == "fsdp"
    replicated = list(vae.parameters())
    if fsdp:  # shard the blocks; the thin stem / head layers (among them the last layer, whose gradient the
        # GAN's adaptive weight takes) stay whole on every process, averaged like the replicated VAE's
        units = [*vae.encoder.down_blocks, vae.encoder.mid_block, vae.decoder.mid_block, *vae.decoder.up_blocks]
        in_units = {id(q) for u in units for q in u.parameters()}
        replicated = [q for q in vae.parameters() if id(q) not in in_units]
        apply_fsdp(vae, units, ignored_params=set(replicated), forward_methods=("encode", "decode"))
    # gradients FSDP does not reduce: the replicated VAE parameters and the loss's own
    manual_sync = [q for q in replicated + loss_fn.generator_parameters() if q.requires_grad]
    g_params = [q for q in vae.parameters() if q.requires_grad] + loss_fn.generator_parameters()
    betas = parse_betas(cfg.adam_betas)
    opt_g = torch.optim.Adam(g_params, lr=cfg.lr, betas=betas)
    opt_d = torch.optim.Adam(loss_fn.discriminator_parameters(), lr=cfg.lr, betas=betas)
    loader = video_loader(cfg.data, batch_size=cfg.batch_size, frames=cfg.frames, stride=cfg.frame_stride,
                          clip_start=cfg.clip_start,
                          size=cfg.size, image_video_ratio=cfg.image_video_ratio, seed=cfg.seed,
                          num_workers=cfg.num_workers, rank=ctx.rank, world_size=ctx.world_size)

    ckpt_dir = out / "checkpoints"
    modules = {"vae": vae, "loss": loss_fn}
    optimizers = {"opt_g": opt_g, "opt_d": opt_d}
    state = resume(ckpt_dir, modules, optimizers)
    step = state["step"] if state else 0
    if state:
        loaders = state["loaders"]
        if len(loaders) == ctx.world_size:
            loader.load_state_dict(loaders[ctx.rank])
        else:  # the data position is per process: continue with the next epoch
            loader.set_epoch(loaders[0]["epoch"] + 1)
    # Resume has decided: from here on the run folder may be written.
    if main:
        write_run_config(out, asdict(cfg))
    log = MetricsLog(out / "metrics.jsonl", resume_step=step, tensorboard=cfg.tensorboard, enabled=main)
    # progress_bar: redrawn at most every 30 s when stderr is a log, not a terminal; postfix updates do
    # not force a redraw (refresh=False), or each logged step would print a line.
    bar = progress_bar(total=cfg.steps, initial=step, desc="train_vae", unit="step", disable=not main)
    x = None
    started = None  # the time limit counts training, not the data loader's start-up
    elapsed = 0.0  # seconds of training in this process, the same on every process (averaged)
    for batch in endless_batches(loader) if step < cfg.steps else ():
        started = started or time.perf_counter()
        x = batch["pixel_values"].to(device)
        lr = cfg.lr * lr_factor(step, cfg.warmup_steps, cfg.steps, cfg.lr_schedule,
                                decay_fraction=cfg.decay_fraction, progress=run_progress(cfg, step, elapsed))
        set_lr(opt_g, lr)
        set_lr(opt_d, lr)
        gens = sample_generators(cfg.seed, step, batch_offset(x.shape[0], device)[0], x.shape[0])
        posterior = vae.encode(x)
        z = posterior.mean + posterior.std * randn_per_sample(posterior.mean.shape[1:], gens, device)
        x_hat = vae.decode(z)
        weights = object_weights(x, cfg.object_weight) if cfg.object_weight > 0 else None
        loss, logs = loss_fn.generator_loss(x, x_hat, posterior, step, last_layer, weights=weights)
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        all_reduce_gradients(manual_sync)
        clip_grad_norm(g_params, cfg.grad_clip)
        opt_g.step()
        if step >= cfg.disc_start:
            d_loss, d_logs = loss_fn.discriminator_loss(x, x_hat.detach(), step)
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            all_reduce_gradients(loss_fn.discriminator_parameters())
            opt_d.step()
            logs.update(d_logs)
        step += 1
        bar.update(1)
        if cfg.time_limit > 0:
            elapsed = all_reduce_mean(torch.tensor([time.perf_counter() - started], device=device)).item()
        out_of_time = cfg.time_limit > 0 and elapsed >= cfg.time_limit and step >= cfg.min_steps
        if out_of_time:
            print(f"train_vae: --time-limit {cfg.time_limit:g} s reached at step {step} ({elapsed:.0f} s)")
        last = step == cfg.steps or out_of_time
        if step % cfg.log_every == 0 or last:
            with torch.no_grad():
                logs["psnr"] = psnr(x_hat.clamp(-1, 1), x).mean()
            scalars = {k: v.detach().float().reshape(()) for k, v in logs.items() if v.numel() == 1}
            mean = all_reduce_mean(torch.stack(list(scalars.values())))
            log.write(step, lr=lr, **dict(zip(scalars, mean.tolist())))
            bar.set_postfix(loss=f"{loss.item():.4f}", psnr=f"{scalars['psnr'].item():.2f}", refresh=False)
        if step % cfg.save_every == 0 or last:
            save_checkpoint(ckpt_dir, step, modules, optimizers,
                            {"loaders": all_gather_objects(loader.state_dict()), "world_size": ctx.world_size,
                             "config": asdict(cfg)})
        if last:
            break
    bar.close()
    log.close()
    final = out / "final"
    state = full_state_dict(vae) if fsdp else None  # collective; complete on rank 0
    if main:
        if fsdp:  # a plain copy from the gathered weights (a sharded model cannot run on one process)
            plain = SliceVAE(copy.deepcopy(vae.config))
            plain.load_state_dict(state)
            vae = plain.to(device)
        vae.save_pretrained(final)
        plot_metrics(out / "metrics.jsonl", out / "loss.png")
        if x is None:  # resumed after the last step: reconstruct a batch for the report
            x = next(iter(endless_batches(loader)))["pixel_values"].to(device)
        report = reconstruct_samples(vae.eval(), x[:2].detach(), out / "samples", psnr, ssim)
        print(f"saved {final}; reconstructions in {out / 'samples'}: " + json.dumps(report))
    barrier()
    return final


def run_progress(cfg: TrainVAEConfig, step: int, elapsed: float) -> float:
    """Fraction of the run done after `step` steps and `elapsed` seconds (the LR schedule follows it).

    The run ends at --steps, or once the time limit has passed and --min-steps are done: its progress
    is the further along of `step / steps` and the time limit's part, which is the elapsed fraction of
    the limit or, when --min-steps are still ahead, the smaller of that and `step / min_steps`.
    (Steps count after the warm-up.)"""
    w = cfg.warmup_steps
    done = (step - w) / max(1, cfg.steps - w)
    if cfg.time_limit <= 0:
        return done
    timed = elapsed / cfg.time_limit
    if cfg.min_steps > 0:
        timed = min(timed, (step - w) / max(1, cfg.min_steps - w))
    return max(done, timed)


@torch.no_grad()
def reconstruct_samples(vae, x: torch.Tensor, out: Path, psnr, ssim) -> dict:
    """Write input | reconstruction side by side (mp4 + gif) and return PSNR / SSIM of the batch."""
    vae.enable_slicing()
    x_hat = vae.decode(vae.encode(x).mode()).clamp(-1, 1)
    out.mkdir(parents=True, exist_ok=True)
    for i, (a, b) in enumerate(zip(x, x_hat)):
        frames = tensor_to_frames(torch.cat([a, b], dim=-1))
        write_video(out / f"recon_{i}.mp4", frames, fps=8)
        write_video(out / f"recon_{i}.gif", frames, fps=8)
    report = {"psnr": round(psnr(x_hat, x).mean().item(), 3), "ssim": round(ssim(x_hat, x).mean().item(), 4)}
    atomic_write_json(out / "metrics.json", report)
    return report


def main(argv=None) -> int:
    cfg = parse_args(argv)
    return run_trainer(train, cfg, {"--data": cfg.data}, " (run `uv run apps/demo` to build the demo shards)")


if __name__ == "__main__":
    raise SystemExit(main())
