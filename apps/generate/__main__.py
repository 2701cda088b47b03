r"""Generate videos from text with a trained VideoDiT + Slice VAE + T5 text encoder.

    uv run apps/generate --run runs/demo --prompt "a red circle moves left"
    uv run apps/generate --dit runs/demo/dit/final --vae runs/demo/vae/final \
        --text-encoder runs/demo/text_encoder --prompt "..." --sampler ddim --steps 50

`--run` takes the models and the default size, frame count, frame rate and sampler settings from a run
folder: its `run.json` when there is one, else the layout the trainers write (`dit/final`, `vae/final`,
`text_encoder`, and `dit/config.json` for the training size and frame count). Flags override it.

Video i of a call uses seed `--seed + i` and is written as `<out>/<i>-seed<seed>-<prompt>.mp4` (and
`.gif`). Existing files are never replaced unless `--overwrite` is given, and each video gets one
line (prompt, seed, sampler, and the size and frame count actually used) appended to
`<out>/samples.jsonl`. A frame count or size the models cannot make is changed to the nearest one they
can, with a note on stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from pathlib import Path

from ea_core.devices import DTYPES, resolve_device
from ea_data.progress import progress_bar
from ea_dit import T5TextEncoder, VideoDiT
from ea_dit.lora import load_lora
from ea_dit.samplers import SAMPLERS
from ea_dit.t2v import TextToVideoPipeline, read_run_folder
from ea_vae import SliceVAE
from ea_vae.video_io import tensor_to_frames, write_video


def _number(kind, low: float, inclusive: bool, what: str):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not math.isfinite(value) or value < low or (value == low and not inclusive):
            raise argparse.ArgumentTypeError(f"{text} is not {what}")
        return value

    return parse


POSITIVE_INT = _number(int, 1, True, "a positive integer")
NON_NEGATIVE_INT = _number(int, 0, True, "an integer >= 0")
POSITIVE_FLOAT = _number(float, 0, False, "a number > 0")
NON_NEGATIVE_FLOAT = _number(float, 0, True, "a number >= 0")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="uv run apps/generate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default=None, help="run folder to take the models and defaults from (e.g. runs/demo)")
    p.add_argument("--dit", default=None, help="VideoDiT folder (own format or diffusers PixArt)")
    p.add_argument("--vae", default=None, help="SliceVAE folder (own format or diffusers AutoencoderKLMagvit)")
    p.add_argument("--text-encoder", default=None, help="T5 encoder folder or hub id")
    p.add_argument("--prompt", action="append", required=True, help="a prompt; repeat for several videos")
    p.add_argument("--negative-prompt", default="", help="prompt for the unconditional branch")
    p.add_argument("--frames", type=POSITIVE_INT, default=None,
                   help="video frames, 1 + 4k (1 = an image; default: the run's, else 17)")
    p.add_argument("--height", type=POSITIVE_INT, default=None, help="pixels (default: the run's / the DiT's size)")
    p.add_argument("--width", type=POSITIVE_INT, default=None, help="pixels (default: the run's / the DiT's size)")
    p.add_argument("--sampler", choices=sorted(SAMPLERS), default=None,
                   help="dpmpp_2m (DPM-Solver++ 2M), ddim, euler or ddpm (default: the run's, else dpmpp_2m)")
    p.add_argument("--steps", type=POSITIVE_INT, default=None, help="sampling steps (default: the run's, else 20)")
    p.add_argument("--guidance-scale", "--cfg", dest="guidance_scale", type=NON_NEGATIVE_FLOAT, default=None,
                   help="classifier-free guidance scale; 1 = no guidance (default: the run's, else 4.5)")
    p.add_argument("--seed", type=NON_NEGATIVE_INT, default=0, help="seed of the first video; video i uses seed + i")
    p.add_argument("--fps", type=POSITIVE_FLOAT, default=None, help="frame rate of the files (default: the run's, else 8)")
    p.add_argument("--device", default="auto", help="cuda, cpu or auto")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    p.add_argument("--lora", default=None, help="LoRA adapters (train_dit's <out>/lora.safetensors) for the DiT")
    p.add_argument("--lora-scale", type=float, default=1.0, help="adapter strength (0: the base model; default 1)")
    p.add_argument("--out", default="runs/generate", help="output folder (default runs/generate)")
    p.add_argument("--overwrite", action="store_true", help="replace existing files of the same name")
    a = p.parse_args(argv)
    if a.seed >= 2**63:
        p.error(f"argument --seed: {a.seed} is too large (< 2**63)")
    if a.run is None and not (a.dit and a.vae and a.text_encoder):
        p.error("give --run RUN_FOLDER, or all of --dit, --vae and --text-encoder")
    return a


def _nearest(value: int, multiple: int, offset: int = 0) -> int:
    """The nearest `offset + k * multiple` (k >= 0) to value; ties go down."""
    k = max(0, math.floor((value - offset) / multiple + 0.5 - 1e-9))
    return offset + k * multiple


def resolve_shape(a: argparse.Namespace, run: dict, pipe) -> dict[str, int]:
    """Frames, height and width to use: flags, else run defaults, else the model's; each moved to the
    nearest value the models can make, with a note on stderr."""
    tc, m = pipe.vae.config.temporal_compression, pipe.pixel_multiple
    wanted = {"frames": a.frames or int(run.get("frames", 17)),
              "height": a.height or int(run.get("height", pipe.default_size)),
              "width": a.width or int(run.get("width", pipe.default_size))}
    used = {"frames": max(1, _nearest(wanted["frames"], tc, 1)),
            "height": max(m, _nearest(wanted["height"], m)),
            "width": max(m, _nearest(wanted["width"], m))}
    for key, need in (("frames", f"1 + {tc}k"), ("height", f"a multiple of {m}"), ("width", f"a multiple of {m}")):
        if used[key] != wanted[key]:
            print(f"note: {key} {wanted[key]} is not {need}; using {used[key]}", file=sys.stderr)
    return used


def output_paths(out: Path, prompts: list[str], seed: int) -> list[tuple[Path, Path]]:
    """(mp4, gif) per prompt: `<index>-seed<seed>-<prompt>`."""
    paths = []
    for i, prompt in enumerate(prompts):
        slug = re.sub(r"[^a-zA-Z0-9]+", "_", prompt).strip("_")[:48] or "video"
        stem = f"{i:02d}-seed{seed + i}-{slug}"
        paths.append((out / f"{stem}.mp4", out / f"{stem}.gif"))
    return paths


def load_models(dit_path, vae_path, text_encoder_path, device, dtype):
    dit = VideoDiT.from_pretrained(dit_path).to(device, dtype).eval()
    vae = SliceVAE.from_pretrained(vae_path).to(device, dtype).eval()
    text_encoder = T5TextEncoder.from_pretrained(text_encoder_path, device=device)
    return dit, vae, text_encoder


def main(argv=None) -> int:
    a = parse_args(argv)
    try:
        run = read_run_folder(a.run) if a.run else {}
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    paths = {k: getattr(a, k) or run.get(k) for k in ("dit", "vae", "text_encoder")}
    for name in ("dit", "vae"):
        if not Path(paths[name]).exists():
            source = f"--{name}" if getattr(a, name) else f"--run {a.run} ({name})"
            print(f"error: {source}: {paths[name]} does not exist", file=sys.stderr)
            return 2
    out = Path(a.out)
    files = output_paths(out, a.prompt, a.seed)
    existing = [str(p) for pair in files for p in pair if p.exists()]
    if existing and not a.overwrite:
        print(f"error: would overwrite {', '.join(existing)}; pass --overwrite to replace, or change --seed "
              f"or --out", file=sys.stderr)
        return 2

    device, dtype = resolve_device(a.device), DTYPES[a.dtype]
    try:
        dit, vae, text_encoder = load_models(paths["dit"], paths["vae"], paths["text_encoder"], device, dtype)
    except (OSError, ValueError) as e:  # the loaders name the file and what is wrong with it
        print(f"error: cannot load the models: {e}", file=sys.stderr)
        return 2
    if a.lora:
        try:
            load_lora(dit, a.lora, a.lora_scale)
        except (OSError, ValueError) as e:
            print(f"error: --lora {a.lora}: {e}", file=sys.stderr)
            return 2
    pipe = TextToVideoPipeline(dit, vae, text_encoder)
    shape = resolve_shape(a, run, pipe)
    fps = a.fps or float(run.get("fps", 8.0))
    sampler = a.sampler or run.get("sampler", "dpmpp_2m")
    steps = a.steps or int(run.get("steps", 20))
    guidance_scale = a.guidance_scale if a.guidance_scale is not None else float(run.get("guidance_scale", 4.5))
    try:
        videos = pipe(a.prompt, shape["frames"], shape["height"], shape["width"], steps=steps,
                      guidance_scale=guidance_scale, sampler=sampler, seed=a.seed,
                      negative_prompt=a.negative_prompt,
                      progress=lambda it: progress_bar(it, desc="sampling", unit="step"))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    settings = {"negative_prompt": a.negative_prompt, "sampler": sampler, "steps": steps,
                "guidance_scale": guidance_scale, **shape, "fps": fps, "dtype": a.dtype,
                "lora": a.lora, "lora_scale": a.lora_scale if a.lora else None,
                **{k: str(v) for k, v in paths.items()}}
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "samples.jsonl", "a") as record:
        for i, (video, prompt, (mp4, gif)) in enumerate(zip(videos, a.prompt, files)):
            frames = tensor_to_frames(video)
            write_video(mp4, frames, fps)
            write_video(gif, frames, fps)
            row = {"file": str(mp4), "gif": str(gif), "prompt": prompt, "seed": a.seed + i, **settings,
                   "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            record.write(json.dumps(row) + "\n")
            record.flush()
            print(mp4)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
