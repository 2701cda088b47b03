"""Reward backpropagation's decode: peak memory of decoding only the scored slice vs the whole clip.

The reward scores a few frames (often the first). With the causal Slice VAE the first `n` latents decode
to exactly the first `1 + 4(n-1)` frames, so reward backpropagation decodes `latents[:, :, :n]` only.
For each clip length this measures, under autograd (decode, a pixel loss, backward to the latents):

- `slice`: decode the first latent (the first frame) only;
- `whole`: decode every latent, then score the same first frame.

Each measurement runs in its own subprocess; CPU peak = the child's RSS high-water mark above its RSS
after building the VAE and the latents (CUDA: max_memory_allocated above the same point).

    uv run benchmarks/reward_decode_memory.py                 # small VAE, 64 px, 9..65 frames
    uv run benchmarks/reward_decode_memory.py --device cuda --size 512 --frames 9 25 49
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _memory import reset_peak_rss, rss_bytes  # noqa: E402
from _results import save_results  # noqa: E402

SMALL = dict(block_out_channels=[32, 64, 128, 128], latent_channels=16, layers_per_block=1, norm_num_groups=8)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--size", type=int, default=64, help="frame height and width in pixels")
    p.add_argument("--frames", type=int, nargs="+", default=[9, 17, 33, 65], help="clip lengths (1 + 4k)")
    p.add_argument("--scored-latents", type=int, default=1, help="latents holding the scored frames")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--out-dir", default=None)
    return p.parse_args(argv)


def _rss(field: str) -> int:
    value = rss_bytes(field)
    if value is None:
        raise RuntimeError(f"{field} not in /proc/self/status")
    return value


def worker(spec: dict) -> dict:
    import torch

    from ea_vae import SliceVAE, SliceVAEConfig

    torch.manual_seed(0)
    device = torch.device(spec["device"])
    vae = SliceVAE(SliceVAEConfig(**SMALL)).to(device)
    vae.requires_grad_(False)  # the VAE is frozen; gradients go to the latents (and on to the DiT)
    n_lat = (spec["frames"] - 1) // 4 + 1
    lat = spec["size"] // 8
    z = torch.randn(1, SMALL["latent_channels"], n_lat, lat, lat, device=device, requires_grad=True)
    keep = n_lat if spec["method"] == "whole" else spec["scored_latents"]
    scored_frames = 1 + 4 * (spec["scored_latents"] - 1)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        if not reset_peak_rss():
            raise RuntimeError("cannot reset the RSS high-water mark (/proc/self/clear_refs)")
        base = _rss("VmRSS")
    t0 = time.perf_counter()
    video = vae.decode(z[:, :, :keep])
    loss = video[:, :, :scored_frames].square().mean()
    loss.backward()
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = _rss("VmHWM") - base
    return {"frames": spec["frames"], "latents": n_lat, "method": spec["method"], "decoded_latents": keep,
            "peak_mib": round(peak / 2**20, 1), "time_s": round(time.perf_counter() - t0, 3),
            "grad_nonzero_latents": int((z.grad.abs().sum(dim=(0, 1, 3, 4)) > 0).sum())}


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    rows = []
    print(f"{'frames':>7}{'method':>8}{'peak MiB':>10}{'time s':>8}", flush=True)
    for frames in args.frames:
        if (frames - 1) % 4:
            raise SystemExit(f"--frames {frames}: clip lengths must be 1 + 4k")
        for method in ("slice", "whole"):
            spec = dict(device=args.device, size=args.size, frames=frames, method=method,
                        scored_latents=args.scored_latents)
            out = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True,
                                 text=True)
            if out.returncode:
                raise SystemExit(f"worker {spec} failed:\n{out.stderr[-2000:]}")
            r = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(r)
            print(f"{frames:>7}{method:>8}{r['peak_mib']:>10.1f}{r['time_s']:>8.2f}", flush=True)
    ratios = {}
    for frames in args.frames:
        s = next(r for r in rows if r["frames"] == frames and r["method"] == "slice")
        w = next(r for r in rows if r["frames"] == frames and r["method"] == "whole")
        ratios[frames] = {"whole_over_slice_peak": w["peak_mib"] / s["peak_mib"] if s["peak_mib"] else None,
                          "whole_over_slice_time": w["time_s"] / s["time_s"] if s["time_s"] else None}
    print(json.dumps(ratios, indent=1))
    config = {k: v for k, v in vars(args).items() if k not in ("worker", "out_dir")} | {"vae": SMALL}
    path = save_results("reward_decode_memory", {"measurements": rows, "ratios": ratios}, config, args.out_dir)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
