"""Peak memory and time of Slice VAE decode against frame count, next to diffusers' AutoencoderKLMagvit.

    uv run benchmarks/decode_memory.py                  # small CPU config, 9..129 frames, a few minutes
    uv run benchmarks/decode_memory.py --device cuda --dtype bf16 --size 1024 --frames 49 --config released

One diffusers ``AutoencoderKLMagvit`` with random weights is built and saved once; ``SliceVAE`` loads the
same folder through ``from_pretrained`` (diffusers layout), so both decode the same function of the same
random latents in the same dtype. Every (method, frames) measurement runs in its own subprocess:

- CPU: peak RSS during decode, from ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` after resetting the
  process's high-water mark (``/proc/self/clear_refs``), minus the RSS just before decode;
- CUDA: ``torch.cuda.max_memory_allocated`` minus the memory allocated just before decode.

Methods: ``unsliced`` (whole video at once), ``sliced`` (exact streaming, ``--decode-latents`` latent
frames per slice), ``sliced_tiled`` (plus spatial tiles of ``--tile-size`` px), ``diffusers`` (its default
frame-wise decode; ``diffusers_tiled`` adds its tiling). Writes ``results/decode_memory-<device>.json``
(via ``_results.save_results``) and a PNG plot next to it, and prints the ratios the issue targets.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _memory import reset_peak_rss  # noqa: E402

from ea_core.atomic import atomic_write

METHODS = ("unsliced", "sliced", "sliced_tiled", "diffusers")
ALL_METHODS = (*METHODS, "diffusers_tiled")
CONFIGS = {
    # a small VAE with the full 8x8x4 compression: runs on a shared 2-core CPU in seconds
    "small": dict(block_out_channels=[32, 64, 128, 128], latent_channels=16, layers_per_block=1,
                  norm_num_groups=8),
    # the released EasyAnimate V5.1 VAE architecture (random weights)
    "released": dict(block_out_channels=[128, 256, 512, 512], latent_channels=16, layers_per_block=2,
                     norm_num_groups=32),
}
DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    p.add_argument("--size", type=int, default=64, help="frame height = width in pixels (multiple of 8; default 64)")
    p.add_argument("--frames", type=int, nargs="+", default=[9, 17, 33, 65],
                   help="frame counts (each 1 + 4k)")
    p.add_argument("--config", choices=sorted(CONFIGS), default="small", help="VAE architecture")
    p.add_argument("--model-dir", type=Path, default=None,
                   help="use this diffusers AutoencoderKLMagvit folder instead of random weights")
    p.add_argument("--methods", nargs="+", choices=ALL_METHODS, default=list(METHODS))
    p.add_argument("--decode-latents", type=int, default=1, help="latent frames per decode slice")
    p.add_argument("--tile-size", type=int, default=None, help="tile size in px (default: size / 2)")
    p.add_argument("--overlap", type=float, default=0.25)
    p.add_argument("--repeats", type=int, default=3,
                   help="timed decodes per measurement (after a warm-up): the first gives the peak, the "
                        "fastest the time")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: steadier timings on a shared CPU; 0 = torch's choice)")
    p.add_argument("--timeout", type=float, default=900, help="seconds per measurement")
    p.add_argument("--out-dir", type=Path, default=None, help="results folder (default benchmarks/results)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for f in args.frames:
        if f < 1 or (f - 1) % 4:
            p.error(f"--frames {f}: frame counts must be 1 + 4k")
    if args.size % 8:
        p.error(f"--size {args.size}: must be a multiple of 8")
    if args.tile_size is None:
        args.tile_size = max(16, args.size // 2)
    return args


# ----------------------------------------------------------------------------- worker (one subprocess)


def _max_rss_bytes() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def worker(spec: dict) -> dict:
    """Load one model, decode random latents once or more, return the peak memory and times."""
    import gc

    import torch

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    device, dtype = torch.device(spec["device"]), getattr(torch, DTYPES[spec["dtype"]])
    method = spec["method"]
    if method.startswith("diffusers"):
        from diffusers import AutoencoderKLMagvit

        vae = AutoencoderKLMagvit.from_pretrained(spec["model_dir"])
        if method == "diffusers_tiled":
            stride = int(spec["tile_size"] * (1 - spec["overlap"]))
            vae.enable_tiling(tile_sample_min_height=spec["tile_size"], tile_sample_min_width=spec["tile_size"],
                              tile_sample_stride_height=stride, tile_sample_stride_width=stride)

        def decode(z):
            return vae.decode(z).sample
    else:
        from ea_vae import SliceVAE

        vae = SliceVAE.from_pretrained(spec["model_dir"])
        if method == "unsliced":
            vae.disable_slicing()
        else:
            vae.enable_slicing(decode_latents=spec["decode_latents"], scheme="streaming")
        if method == "sliced_tiled":
            vae.enable_tiling(tile_size=spec["tile_size"], overlap=spec["overlap"])
        else:
            vae.disable_tiling()

        def decode(z):
            return vae.decode(z)

    vae = vae.to(device=device, dtype=dtype).eval()
    k = (spec["frames"] - 1) // 4
    h = spec["size"] // 8
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(1, spec["latent_channels"], k + 1, h, h, generator=gen).to(device=device, dtype=dtype)

    cuda = device.type == "cuda"
    with torch.inference_mode():
        # warm-up on the first latent frame at full size: lazy library state (thread pools, kernels,
        # oneDNN primitives) is allocated here, not inside the measurement
        decode(z[:, :, :1])
        if cuda:
            torch.cuda.synchronize()
    times, peak, error = [], None, None
    for i in range(spec["repeats"]):
        gc.collect()
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        else:
            exact = reset_peak_rss()
            base = _max_rss_bytes()
        try:
            with torch.inference_mode():
                t0 = time.perf_counter()
                out = decode(z)
                if cuda:
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
        except torch.OutOfMemoryError as e:
            error = f"out of memory: {str(e).splitlines()[0]}"
            break
        if i == 0:
            peak = (torch.cuda.max_memory_allocated() if cuda else _max_rss_bytes()) - base
            shape = list(out.shape)
            output_bytes = out.numel() * out.element_size()
            checksum = [float(out.float().mean()), float(out.float().abs().mean())]
            if spec.get("save_output"):
                torch.save(out.float().cpu(), spec["save_output"])
        del out
    result = {"method": method, "frames": spec["frames"], "latent_frames": k + 1}
    if error:
        return result | {"error": error}
    return result | {
        "peak_mib": peak / 2**20, "output_mib": output_bytes / 2**20,
        "peak_minus_output_mib": (peak - output_bytes) / 2**20,
        "time_s": min(times), "times_s": times, "output_shape": shape, "output_mean_absmean": checksum,
        "peak_source": "cuda.max_memory_allocated" if cuda else (
            "ru_maxrss after clear_refs" if exact else "ru_maxrss (high-water mark not resettable)"),
    }


# ----------------------------------------------------------------------------- driver


def _run(spec: dict, timeout: float) -> dict:
    """Run one measurement in a fresh Python process and parse its result line."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    # a fixed mmap threshold stops glibc from keeping freed activation buffers on its heap, so RSS
    # follows the live tensors instead of the allocator's history
    env = os.environ | {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "65536"}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"method": spec["method"], "frames": spec["frames"], "error": f"timeout after {timeout:.0f}s"}
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return {"method": spec["method"], "frames": spec["frames"], "error": " | ".join(tail) or f"rc {proc.returncode}"}


def _build_model(model_dir: Path, config: dict) -> None:
    """Save a diffusers AutoencoderKLMagvit with seeded random weights (in a subprocess: keeps the driver small)."""
    code = ("import sys, json, torch; from diffusers import AutoencoderKLMagvit; torch.manual_seed(0); "
            "AutoencoderKLMagvit(**json.loads(sys.argv[1])).save_pretrained(sys.argv[2])")
    subprocess.run([sys.executable, "-c", code, json.dumps(config), str(model_dir)], check=True,
                   capture_output=True)


def ratios(results: list[dict], frames: list[int]) -> dict:
    """The issue's targets, computed from the measurements (None where a measurement is missing)."""
    by = {(r["method"], r["frames"]): r for r in results if "error" not in r}

    def get(method, f, key):
        r = by.get((method, f))
        return r[key] if r else None

    out: dict = {}
    # sliced peak at 8x the latent frames (k -> 8k) over the peak at 1x
    pairs = []
    for f0 in frames:
        f8 = 1 + 8 * (f0 - 1)
        if f8 in frames and get("sliced", f0, "peak_mib") and get("sliced", f8, "peak_mib"):
            pairs.append({"frames_1x": f0, "frames_8x": f8,
                          "ratio": get("sliced", f8, "peak_mib") / get("sliced", f0, "peak_mib")})
    out["sliced_peak_8x_over_1x"] = pairs
    out["sliced_peak_max_over_min"] = None
    peaks = [get("sliced", f, "peak_mib") for f in frames if get("sliced", f, "peak_mib")]
    if len(peaks) >= 2:
        out["sliced_peak_max_over_min"] = max(peaks) / min(peaks)
    per_frames = []
    for f in frames:
        row = {"frames": f}
        t_s, t_u, t_d = get("sliced", f, "time_s"), get("unsliced", f, "time_s"), get("diffusers", f, "time_s")
        m_s, m_d = get("sliced", f, "peak_mib"), get("diffusers", f, "peak_mib")
        row["sliced_time_over_unsliced"] = t_s / t_u if t_s and t_u else None
        row["diffusers_time_over_sliced"] = t_d / t_s if t_s and t_d else None
        row["sliced_peak_over_diffusers"] = m_s / m_d if m_s and m_d else None
        per_frames.append(row)
    out["per_frames"] = per_frames
    return out


def plot(results: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_m, ax_t) = plt.subplots(1, 2, figsize=(11, 4.2))
    for method in ALL_METHODS:
        rows = sorted((r for r in results if r["method"] == method and "error" not in r), key=lambda r: r["frames"])
        if not rows:
            continue
        x = [r["frames"] for r in rows]
        ax_m.plot(x, [r["peak_mib"] for r in rows], marker="o", label=method)
        ax_t.plot(x, [r["time_s"] for r in rows], marker="o", label=method)
    ax_m.set(xlabel="frames", ylabel="peak memory during decode (MiB)", title="peak memory")
    ax_t.set(xlabel="frames", ylabel="decode time (s)", title="time")
    for ax in (ax_m, ax_t):
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)
        ax.legend()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110))
    plt.close(fig)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(worker(json.loads(args.worker))), flush=True)
        return 0

    from _results import save_results

    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "worker"}
    config["model_config"] = CONFIGS[args.config] if args.model_dir is None else str(args.model_dir)
    with tempfile.TemporaryDirectory(prefix="decode_memory_") as tmp:
        model_dir = args.model_dir or Path(tmp) / "vae"
        if args.model_dir is None:
            print(f"building a random-weight AutoencoderKLMagvit ({args.config}) in {model_dir}", flush=True)
            _build_model(model_dir, CONFIGS[args.config])
        latent_channels = json.loads((Path(model_dir) / "config.json").read_text())["latent_channels"]
        results = []
        check_frames = min(args.frames)
        outputs = {}
        print(f"{'method':<16}{'frames':>7}{'peak MiB':>11}{'time s':>9}", flush=True)
        for frames in args.frames:
            for method in args.methods:
                spec = {"method": method, "frames": frames, "size": args.size, "device": args.device,
                        "dtype": args.dtype, "model_dir": str(model_dir), "latent_channels": latent_channels,
                        "decode_latents": args.decode_latents, "tile_size": args.tile_size,
                        "overlap": args.overlap, "repeats": args.repeats, "threads": args.threads}
                if frames == check_frames:
                    outputs[method] = spec["save_output"] = str(Path(tmp) / f"{method}.pt")
                r = _run(spec, args.timeout)
                results.append(r)
                if "error" in r:
                    print(f"{method:<16}{frames:>7}  ERROR {r['error']}", flush=True)
                else:
                    print(f"{method:<16}{frames:>7}{r['peak_mib']:>11.1f}{r['time_s']:>9.2f}", flush=True)

        # sanity check, after all measurements so the driver stays small while they run:
        # every method decoded the same function
        import torch

        agreement = {}
        ref_name = "diffusers" if "diffusers" in outputs else next(iter(outputs))
        if Path(outputs[ref_name]).exists():
            ref = torch.load(outputs[ref_name], weights_only=True)
            for name, path in outputs.items():
                if name != ref_name and Path(path).exists():
                    out = torch.load(path, weights_only=True)
                    agreement[f"{name}_vs_{ref_name}_max_abs_diff"] = (
                        float((out - ref).abs().max()) if out.shape == ref.shape else f"shape {list(out.shape)}")

    summary = ratios(results, args.frames)
    summary["max_abs_diff_at_frames"] = {"frames": check_frames, **agreement}
    path = save_results("decode_memory", {"measurements": results, "summary": summary}, config,
                        out_dir=args.out_dir)
    png = path.with_suffix(".png")
    title = (f"decode {args.size}x{args.size}, {args.config} VAE, {args.dtype}, {args.device}, "
             f"{args.decode_latents} latent/slice, tile {args.tile_size}")
    plot(results, png, title)
    print(json.dumps(summary, indent=2))
    print(f"wrote {path} and {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
