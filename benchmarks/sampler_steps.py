"""Held-out match rate against sampling steps, per sampler, on a trained demo model.

    uv run benchmarks/sampler_steps.py --run runs/demo                   # all samplers, 5..50 steps
    uv run benchmarks/sampler_steps.py --run runs/demo --samplers dpmpp_2m ddim --steps 10 15 50

For every sampler and step count, the run's DiT generates one clip per `ea_data.synthetic.HELD_OUT`
triple (caption from `demo_caption`) and seed; `ea_data.clip_eval` measures whether the asked colour is
present and the object moves in the asked direction. Every (sampler, steps) case uses the same seeds, so
the cases start from the same noise. Also reported per case:

- `latent_rms_to_reference`: RMS distance of the ODE samplers' latents from a `--reference-steps`
  DPM-Solver++(2M) solution from the same noise (how far from the exact probability-flow ODE solution
  the few-step samplers land; DDPM is stochastic and has no such reference);
- `seconds_per_clip`: sampling + decoding time per clip (compare only within one run).

The question it answers: does DPM-Solver++(2M) at 10-15 steps match DDIM at 50? Results go to
`benchmarks/results/sampler_steps-<device>.json`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from ea_data.clip_eval import evaluate_clips, match_rates
from ea_data.synthetic import HELD_OUT, demo_caption
from ea_dit import T5TextEncoder, TextToVideoPipeline, VideoDiT
from ea_dit.samplers import SAMPLERS
from ea_dit.t2v import decode_latents, read_run_folder
from ea_vae import SliceVAE

sys.path.insert(0, str(Path(__file__).parent))
from _results import save_results  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default="runs/demo", help="trained demo run folder (default runs/demo)")
    p.add_argument("--samplers", nargs="+", choices=sorted(SAMPLERS), default=["dpmpp_2m", "ddim", "euler", "ddpm"])
    p.add_argument("--steps", nargs="+", type=int, default=[5, 10, 15, 25, 50])
    p.add_argument("--seeds", type=int, default=2, help="seeds per held-out triple (default 2)")
    p.add_argument("--guidance-scale", type=float, default=None, help="default: the run's, else 4.5")
    p.add_argument("--reference-steps", type=int, default=200, help="0: no ODE reference")
    p.add_argument("--batch", type=int, default=16, help="clips per generation call")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--limit", type=int, default=None, help="only the first N held-out triples (quick looks)")
    p.add_argument("--out-dir", default=None, help="results folder (default benchmarks/results)")
    return p.parse_args(argv)


def load_pipeline(run: str, device: str) -> tuple[TextToVideoPipeline, dict]:
    info = read_run_folder(run)
    dit = VideoDiT.from_pretrained(info["dit"]).to(device).eval()
    vae = SliceVAE.from_pretrained(info["vae"]).to(device).eval()
    text_encoder = T5TextEncoder.from_pretrained(info["text_encoder"], device=device)
    return TextToVideoPipeline(dit, vae, text_encoder), info


def measure(pipe: TextToVideoPipeline, shape: dict, prompts: list[str], seeds: list[int], attributes: list,
            sampler: str, steps: int, guidance_scale: float, batch: int, reference: torch.Tensor | None) -> dict:
    latents, videos, t0 = [], [], time.perf_counter()
    for i in range(0, len(prompts), batch):
        z = pipe.generate_latents(prompts[i:i + batch], shape["frames"], shape["height"], shape["width"],
                                  steps=steps, guidance_scale=guidance_scale, sampler=sampler,
                                  seed=seeds[i:i + batch])
        latents.append(z.cpu())
        videos.append(decode_latents(pipe.vae, z).cpu())
    seconds = (time.perf_counter() - t0) / len(prompts)
    latents, videos = torch.cat(latents), torch.cat(videos)
    row = {"sampler": sampler, "steps": steps, **match_rates(evaluate_clips(videos, attributes)),
           "seconds_per_clip": round(seconds, 4)}
    if reference is not None and sampler != "ddpm":
        row["latent_rms_to_reference"] = round(float((latents - reference).pow(2).mean().sqrt()), 5)
    return row


def markdown_table(rows: list[dict]) -> str:
    """Sampler x steps table of direction match rate (colour match rate; latent RMS to the reference)."""
    steps = sorted({r["steps"] for r in rows})
    lines = ["| sampler | " + " | ".join(f"{s} steps" for s in steps) + " |", "|---|" + "---|" * len(steps)]
    for sampler in dict.fromkeys(r["sampler"] for r in rows):
        cells = []
        for s in steps:
            r = next((r for r in rows if r["sampler"] == sampler and r["steps"] == s), None)
            rms = f"; {r['latent_rms_to_reference']:.3f}" if r and "latent_rms_to_reference" in r else ""
            cells.append(f"{r['direction']:.0%} ({r['color']:.0%}{rms})" if r else "")
        lines.append(f"| {sampler} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    a = parse_args(argv)
    pipe, info = load_pipeline(a.run, a.device)
    if a.guidance_scale is None:
        a.guidance_scale = float(info.get("guidance_scale", 4.5))
    size = info.get("height", pipe.default_size)
    shape = {"frames": int(info.get("frames", 9)), "height": int(size), "width": int(info.get("width", size))}
    held_out = HELD_OUT[:a.limit] if a.limit else HELD_OUT
    triples = [t for t in held_out for _ in range(a.seeds)]
    prompts = [demo_caption(*t) for t in triples]
    seeds = [1000 * s + i for i in range(len(held_out)) for s in range(a.seeds)]
    attributes = [(color, direction) for color, _, direction in triples]
    reference = None
    if a.reference_steps > 0:
        reference = torch.cat([pipe.generate_latents(
            prompts[i:i + a.batch], shape["frames"], shape["height"], shape["width"], steps=a.reference_steps,
            guidance_scale=a.guidance_scale, sampler="dpmpp_2m", seed=seeds[i:i + a.batch]).cpu()
            for i in range(0, len(prompts), a.batch)])
    rows = []
    for sampler in a.samplers:
        for steps in a.steps:
            row = measure(pipe, shape, prompts, seeds, attributes, sampler, steps, a.guidance_scale, a.batch,
                          reference)
            rows.append(row)
            print(" ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    config = {"run": str(a.run), **shape, "guidance_scale": a.guidance_scale, "seeds_per_triple": a.seeds,
              "held_out_triples": len(held_out), "reference_steps": a.reference_steps}
    print(f"wrote {save_results('sampler_steps', rows, config=config, out_dir=a.out_dir)}")
    print(markdown_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
