r"""Reward backpropagation: post-train a VideoDiT by backpropagating a differentiable reward through sampling.

    uv run apps/train_reward --dit runs/demo/dit/final --vae runs/demo/vae/final \
        --text-encoder runs/demo/text_encoder --reward rewards/aesthetic --prompt "a red circle moves left" \
        --grad-steps last_k --grad-k 2 --train attention --iters 100 --out runs/reward

The demo world (what `uv run apps/demo` does after its DiT; its reward scores whole clips):

    uv run python -m ea_data.scoring.world_reward --data runs/demo/data/shards --out runs/demo/reward
    uv run apps/train_reward --dit runs/demo/dit/final --vae runs/demo/vae/final \
        --text-encoder runs/demo/text_encoder --reward runs/demo/reward --prompts-file prompts.txt \
        --batch-prompts 16 --frames 5 --steps 25 --guidance-scale 4 --scored-latents 5 \
        --grad-steps last_k --grad-k 2 --train all --lr 4e-4 --time-limit 300 --out runs/demo/dit_reward

Each iteration samples one video per prompt (all of them, or `--batch-prompts` drawn from `--prompt` and
`--prompts-file`) with classifier-free guidance under autograd, keeping
gradients only through the chosen denoising steps (`--grad-steps last | last_k | random`, see
`ea_dit.reward_backprop`), decodes only the first `--scored-latents` latents (the frames the reward
scores; the causal Slice VAE decodes a latent prefix exactly), scores the frames (or the clip, for a reward
with `scores_video`) with the reward loaded from `--reward` (a folder with reward.json, see
`ea_data.scoring.rewards`) and minimises
`--loss-scale * |max_reward - reward|`. Activations are recomputed in the backward throughout: the DiT
per block and per differentiated step, and the decode + reward.
`--train` picks the parameters that learn (default: LoRA adapters, written alone to
`--out/lora.safetensors`, loadable with `ea_dit.lora.load_lora`); the rest stay exactly as loaded.
Other choices write the whole DiT to `--out/dit`. Rewards per iteration go to `--out/metrics.jsonl`.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch
from torch.utils.checkpoint import checkpoint

from ea_core.devices import DTYPES, resolve_device
from ea_data.scoring.rewards import load_reward
from ea_dit import T5TextEncoder, VideoDiT
from ea_dit.diffusion import classifier_free_guidance, noise_predictor
from ea_dit.lora import DEFAULT_TARGETS, add_lora, lora_parameters, save_lora
from ea_dit.reward_backprop import choose_grad_steps, reward_loss, sample_ddim_with_grad
from ea_dit.t2v import TextToVideoPipeline, decode_latents
from ea_vae import SliceVAE

TRAINABLE = ("lora", "all", "attention", "cross_attention", "motion")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="train_reward", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dit", required=True, help="VideoDiT folder (save_pretrained layout or diffusers PixArt)")
    p.add_argument("--vae", required=True, help="SliceVAE folder")
    p.add_argument("--text-encoder", required=True, help="T5 text encoder folder")
    p.add_argument("--reward", required=True, help="reward folder holding reward.json")
    p.add_argument("--prompt", nargs="+", default=[], help="training prompts")
    p.add_argument("--prompts-file", default=None, help="a text file of training prompts, one per line (added to "
                                                          "--prompt)")
    p.add_argument("--batch-prompts", type=int, default=0,
                   help="prompts drawn (without replacement) per iteration, one video each (default 0: every "
                        "prompt every iteration)")
    p.add_argument("--out", required=True, help="output folder (dit/, metrics.jsonl)")
    p.add_argument("--frames", type=int, default=9)
    p.add_argument("--height", type=int, default=None, help="pixels (default: the DiT's training size)")
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--steps", type=int, default=10, help="DDIM sampling steps")
    p.add_argument("--guidance-scale", type=float, default=4.5)
    p.add_argument("--grad-steps", choices=("last", "last_k", "random"), default="last")
    p.add_argument("--grad-k", type=int, default=1, help="steps with gradients for last_k / random")
    p.add_argument("--scored-latents", type=int, default=1,
                   help="latents decoded and scored (1 = first frame); a reward that scores clips "
                        "(scores_video, e.g. the demo world's) needs at least 2 frames")
    p.add_argument("--train", choices=TRAINABLE, default="lora",
                   help="parameters that learn: LoRA adapters on the attention/MLP projections (saved alone), "
                        "all, self/cross attention projections, cross-attention only, or motion modules")
    p.add_argument("--lora-rank", type=int, default=128, help="LoRA rank (the reference uses 128)")
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--loss-scale", type=float, default=None, help="default: 10 / max_reward")
    p.add_argument("--iters", type=int, default=100, help="iterations (default 100)")
    p.add_argument("--time-limit", type=float, default=None,
                   help="seconds: stop after the iteration that passes it (and save), even before --iters")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    return p.parse_args(argv)


def trainable_parameters(dit: torch.nn.Module, which: str, lora_rank: int = 128) -> list[torch.nn.Parameter]:
    """The parameters `--train` names (adding LoRA adapters for "lora"); all others are frozen."""
    if which == "lora":
        add_lora(dit, rank=lora_rank)
        params = lora_parameters(dit)
    elif which == "all":
        params = list(dit.parameters())
    elif which == "motion":
        params = dit.motion_module_parameters()
    else:
        mods = [m for b in dit.blocks for m in ((b.attn, b.cross_attn) if which == "attention" else (b.cross_attn,))]
        params = [p for m in mods for p in m.parameters()]
    if not params:
        raise ValueError(f"--train {which}: this DiT has no such parameters")
    dit.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    return params


def main(argv=None) -> int:
    a = parse_args(argv)
    for flag, path in (("--dit", a.dit), ("--vae", a.vae), ("--text-encoder", a.text_encoder),
                       ("--reward", a.reward)):
        if not Path(path).exists():
            print(f"error: {flag}: {path} does not exist", file=sys.stderr)
            return 2
    prompts_all = list(a.prompt)
    if a.prompts_file:
        try:
            prompts_all += [line.strip() for line in Path(a.prompts_file).read_text().splitlines() if line.strip()]
        except OSError as e:
            print(f"error: --prompts-file: {e}", file=sys.stderr)
            return 2
    if not prompts_all:
        print("error: no training prompts: give --prompt or --prompts-file", file=sys.stderr)
        return 2
    if not 0 <= a.batch_prompts:
        print(f"error: --batch-prompts {a.batch_prompts}: must be >= 0", file=sys.stderr)
        return 2
    per_iter = a.batch_prompts or len(prompts_all)
    device, dtype = resolve_device(a.device), DTYPES[a.dtype]
    torch.manual_seed(a.seed)
    dit = VideoDiT.from_pretrained(a.dit).to(device, dtype)
    vae = SliceVAE.from_pretrained(a.vae).to(device, dtype).eval().requires_grad_(False)
    pipe = TextToVideoPipeline(dit, vae, T5TextEncoder.from_pretrained(a.text_encoder, device=device))
    reward = load_reward(a.reward, device=device)
    try:
        shape = pipe.latent_shape(a.frames, a.height or pipe.default_size, a.width or pipe.default_size)
        if not 1 <= a.scored_latents <= shape[1]:
            raise ValueError(f"--scored-latents {a.scored_latents}: the video has {shape[1]} latents")
        choose_grad_steps(a.steps, a.grad_steps, a.grad_k)  # validates the strategy against --steps
        params = trainable_parameters(dit, a.train, a.lora_rank)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    dit.train()
    dit.enable_gradient_checkpointing()
    scale = a.loss_scale if a.loss_scale is not None else 10.0 / reward.max_reward
    opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=0.0)
    with torch.no_grad():
        embeds, mask = pipe.text_encoder(prompts_all)
        null_embeds, null_mask = pipe.text_encoder([""])
    embeds, mask = embeds.to(device, dtype), mask.to(device)
    null_embeds, null_mask = null_embeds.to(device, dtype), null_mask.to(device)
    predict = noise_predictor(dit, pipe.diffusion, dit.config.prediction_type)
    scores_video = getattr(reward, "scores_video", False)

    def decode_and_score(latent_slice, prompts):
        video = decode_latents(vae, latent_slice)[:, :, :n_frames]  # (B, 3, n, H, W)
        if scores_video:
            return reward(video, prompts)  # clips (B, 3, n, H, W) -> (B,)
        frame_prompts = [p for p in prompts for _ in range(n_frames)]
        return reward(video.transpose(1, 2).flatten(0, 1), frame_prompts)  # frames (B*n, 3, H, W) -> (B*n,)

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(a.seed)
    n_frames = 1 + vae.config.temporal_compression * (a.scored_latents - 1)
    print(f"training {sum(p.numel() for p in params):,} parameters ({a.train}) on {len(prompts_all)} prompts, "
          f"{per_iter} per iteration; reward max {reward.max_reward}")
    started = time.perf_counter()
    with open(out / "metrics.jsonl", "a") as log:
        for it in range(a.iters):
            if a.time_limit is not None and time.perf_counter() - started > a.time_limit:
                print(f"--time-limit {a.time_limit:g} s reached after {it} iterations", flush=True)
                break
            t0 = time.perf_counter()
            pick = list(range(len(prompts_all))) if per_iter >= len(prompts_all) else \
                sorted(rng.sample(range(len(prompts_all)), per_iter))
            n = len(pick)
            cond = {"text_embeds": embeds[pick], "text_mask": mask[pick]}
            uncond = {"text_embeds": null_embeds.expand(n, -1, -1), "text_mask": null_mask.expand(n, -1)}
            guided = classifier_free_guidance(predict, a.guidance_scale, cond, uncond)

            def model_fn(x, t, guided=guided):
                return guided(x.to(dtype), t).float()

            x = torch.randn(n, *shape, generator=torch.Generator().manual_seed(a.seed * 100003 + it))
            latents = sample_ddim_with_grad(model_fn, x.to(device), pipe.diffusion, a.steps,
                                            grad_steps=choose_grad_steps(a.steps, a.grad_steps, a.grad_k, rng))
            # decode and score are checkpointed too: their activations are recomputed in the backward
            r = checkpoint(decode_and_score, latents[:, :, :a.scored_latents], [prompts_all[k] for k in pick],
                           use_reentrant=False)
            loss = reward_loss(r, reward.max_reward, scale)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            row = {"iter": it, "reward": r.mean().item(), "loss": loss.item(), "time_s": time.perf_counter() - t0}
            log.write(json.dumps(row) + "\n")
            log.flush()
            if it % max(1, a.iters // 20) == 0 or it == a.iters - 1:
                print(f"iter {it}: reward {row['reward']:.4f} loss {row['loss']:.4f}", flush=True)
    dit.eval()
    if a.train == "lora":
        path = save_lora(dit, out / "lora.safetensors", rank=a.lora_rank, alpha=float(a.lora_rank),
                         targets=DEFAULT_TARGETS)
    else:
        path = dit.save_pretrained(out / "dit")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
