r"""Generate videos from text with a trained VideoDiT + Slice VAE + T5 text encoder.

    uv run apps/generate --dit runs/demo/dit/final --vae runs/demo/vae/final \
        --text-encoder runs/demo/text_encoder --prompt "a red circle moves over a striped background"

Writes `<out>/<index>-<prompt>.mp4` and `.gif` per prompt, plus `samples.json` with the settings.
The VAE decodes with slicing on, so long videos fit in memory.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _shared import DTYPES, generate_videos, pick_device, save_videos  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="uv run apps/generate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dit", required=True, help="VideoDiT folder (own format or diffusers PixArt)")
    p.add_argument("--vae", required=True, help="SliceVAE folder (own format or diffusers AutoencoderKLMagvit)")
    p.add_argument("--text-encoder", required=True, help="T5 encoder folder or hub id")
    p.add_argument("--prompt", action="append", required=True, help="a prompt; repeat for several videos")
    p.add_argument("--negative-prompt", default="", help="prompt for the unconditional branch")
    p.add_argument("--frames", type=int, default=17, help="video frames, 1 + 4k (1 = an image; default 17)")
    p.add_argument("--height", type=int, default=None, help="pixels, multiple of 16 (default: the DiT's size)")
    p.add_argument("--width", type=int, default=None, help="pixels, multiple of 16 (default: the DiT's size)")
    p.add_argument("--steps", type=int, default=25, help="sampling steps (default 25)")
    p.add_argument("--cfg", type=float, default=4.5, help="classifier-free guidance scale (default 4.5)")
    p.add_argument("--sampler", choices=("ddim", "ddpm"), default="ddim")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fps", type=float, default=8.0, help="frame rate of the written files")
    p.add_argument("--device", default="auto", help="cuda, cpu or auto")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    p.add_argument("--out", default="runs/generate", help="output folder (default runs/generate)")
    return p.parse_args(argv)


def load_models(dit_path, vae_path, text_encoder_path, device, dtype):
    from ea_dit import T5TextEncoder, VideoDiT
    from ea_vae import SliceVAE

    dit = VideoDiT.from_pretrained(dit_path).to(device, dtype).eval()
    vae = SliceVAE.from_pretrained(vae_path).to(device, dtype).eval()
    text_encoder = T5TextEncoder.from_pretrained(text_encoder_path, device=device)
    return dit, vae, text_encoder


def main(argv=None) -> int:
    from tqdm import tqdm

    a = parse_args(argv)
    device, dtype = pick_device(a.device), DTYPES[a.dtype]
    for name in ("dit", "vae"):
        if not Path(getattr(a, name)).exists():
            print(f"error: --{name} {getattr(a, name)} does not exist", file=sys.stderr)
            return 2
    dit, vae, text_encoder = load_models(a.dit, a.vae, a.text_encoder, device, dtype)
    size = dit.config.sample_size * vae.config.spatial_compression
    height, width = a.height or size, a.width or size
    try:
        videos = generate_videos(dit, vae, text_encoder, a.prompt, a.frames, height, width, a.steps, a.cfg,
                                 a.sampler, a.seed, a.negative_prompt,
                                 progress=lambda it: tqdm(it, desc="sampling", unit="step"))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(a.out)
    paths = save_videos(videos, a.prompt, out, a.fps)
    info = {"prompts": a.prompt, "files": [str(p) for p in paths], **{k: v for k, v in vars(a).items()
                                                                     if k != "prompt"}}
    tmp = out / "samples.json.tmp"
    tmp.write_text(json.dumps(info, indent=1))
    os.replace(tmp, out / "samples.json")
    for p in paths:
        print(p)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
