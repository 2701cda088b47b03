"""Temporal attention of the motion module: fused Triton kernel vs rearrange + SDPA vs xformers.

Each path takes q, k, v in the spatial token layout `(B*F, N, H, D)` of a DiT block and returns the
output in that layout, so the SDPA and xformers paths pay for their Grid Reshape copies (in and out,
forward and backward) - that is the cost the fused kernel removes. `sdpa_prereshaped` times SDPA on
already-reshaped tensors: a lower bound for any copy-based path.

    uv run benchmarks/temporal_attention.py              # CPU: a tiny config, torch paths only
    uv run benchmarks/temporal_attention.py --configs real   # CUDA: 16/49 latent frames, 32..96 px latents

On the CPU the Triton kernel would only run in its interpreter, whose timings mean nothing, so it is
skipped there (the tests check its correctness). Results go to benchmarks/results/ via save_results.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _results import save_results  # noqa: E402

from ea_core.devices import DTYPES

# (name, batch, latent frames, latent height, latent width, heads, head_dim); patch size 2 -> tokens
# are latent/2 per side. hidden 1152 with the motion module's 8 heads gives head_dim 144.
REAL_CONFIGS = [
    ("f16_32x32", 2, 16, 32, 32, 8, 144),
    ("f16_64x64", 1, 16, 64, 64, 8, 144),
    ("f16_96x96", 1, 16, 96, 96, 8, 144),
    ("f49_32x32", 1, 49, 32, 32, 8, 144),
    ("f49_64x64", 1, 49, 64, 64, 8, 144),
    ("f49_96x96", 1, 49, 96, 96, 8, 144),
    ("f16_64x64_h16d72", 1, 16, 64, 64, 16, 72),
]
TINY_CONFIGS = [("tiny_f4_16x16", 1, 4, 16, 16, 2, 16)]
PATCH = 2


def _time(fn, device: torch.device, warmup: int, iters: int) -> float:
    """Median milliseconds of fn()."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return times[len(times) // 2]


def _xformers_usable(device: torch.device) -> str | None:
    """None when xformers runs here, else the reason it does not."""
    if device.type != "cuda":
        return "xformers has no CPU kernels"
    try:
        import xformers.ops as xops

        x = torch.randn(1, 8, 1, 16, device=device, dtype=torch.float16)
        xops.memory_efficient_attention(x, x, x)
    except Exception as err:  # not installed, or built for another torch (NotImplementedError)
        return f"{type(err).__name__}: {err}".splitlines()[0][:200]
    return None


def _paths(device: torch.device, xformers_reason: str | None):
    from ea_dit.attention import temporal_attention
    from ea_dit.grid_reshape import TokenGrid, grid_reshape, grid_unreshape

    def sdpa(q, k, v, f, h, w, g):
        return temporal_attention(q, k, v, TokenGrid(f, h, w), grid=g, backend="sdpa")

    paths = {"sdpa_rearrange": sdpa}
    if device.type == "cuda":
        def triton_fused(q, k, v, f, h, w, g):
            return temporal_attention(q, k, v, TokenGrid(f, h, w), grid=g, backend="triton")

        paths["triton_fused"] = triton_fused
    if xformers_reason is None:
        def xformers(q, k, v, f, h, w, g):
            return temporal_attention(q, k, v, TokenGrid(f, h, w), grid=g, backend="xformers")

        paths["xformers_rearrange"] = xformers

    def prereshaped(qs, ks, vs):
        out = torch.nn.functional.scaled_dot_product_attention(qs.transpose(1, 2), ks.transpose(1, 2),
                                                               vs.transpose(1, 2))
        return out.transpose(1, 2)

    return paths, prereshaped, grid_reshape, grid_unreshape


def run_config(cfg, dtype, device, grid, warmup, iters, xformers_reason):
    name, batch, frames, lat_h, lat_w, heads, head_dim = cfg
    h, w = lat_h // PATCH, lat_w // PATCH
    gen = torch.Generator(device=device).manual_seed(0)
    shape = (batch * frames, h * w, heads, head_dim)
    q, k, v = (torch.randn(shape, device=device, dtype=dtype, generator=gen, requires_grad=True) for _ in range(3))
    dout = torch.randn(shape, device=device, dtype=dtype, generator=gen)
    paths, prereshaped, grid_reshape, _ = _paths(device, xformers_reason)
    row = {"config": name, "batch": batch, "latent_frames": frames, "latent_hw": [lat_h, lat_w],
           "tokens_hw": [h, w], "heads": heads, "head_dim": head_dim, "grid": grid,
           "seq_len": frames * grid * grid, "num_sequences": batch * (h // grid) * (w // grid), "paths": {}}
    reference = None
    for path_name, fn in paths.items():
        def fwd(fn=fn):
            with torch.no_grad():
                return fn(q, k, v, frames, h, w, grid)

        def fwd_bwd(fn=fn):
            out = fn(q, k, v, frames, h, w, grid)
            return torch.autograd.grad(out, (q, k, v), dout)

        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        entry = {"forward_ms": _time(fwd, device, warmup, iters), "forward_backward_ms": _time(fwd_bwd, device,
                                                                                                warmup, iters)}
        if device.type == "cuda":
            entry["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
        out = fwd().float()
        if reference is None:
            reference = out
        else:
            entry["max_abs_diff_vs_sdpa"] = (out - reference).abs().max().item()
        row["paths"][path_name] = entry

    # SDPA on tensors that are already in the temporal layout: no copies at all
    qs, ks, vs = (grid_reshape(t.detach(), (frames, h, w), grid).requires_grad_() for t in (q, k, v))
    dout_s = grid_reshape(dout, (frames, h, w), grid)

    def pre_fwd():
        with torch.no_grad():
            return prereshaped(qs, ks, vs)

    def pre_fwd_bwd():
        return torch.autograd.grad(prereshaped(qs, ks, vs), (qs, ks, vs), dout_s)

    row["paths"]["sdpa_prereshaped"] = {"forward_ms": _time(pre_fwd, device, warmup, iters),
                                        "forward_backward_ms": _time(pre_fwd_bwd, device, warmup, iters)}
    base = row["paths"]["sdpa_rearrange"]
    for path_name, entry in row["paths"].items():
        if path_name != "sdpa_rearrange":
            entry["speedup_forward_vs_sdpa_rearrange"] = round(base["forward_ms"] / entry["forward_ms"], 3)
            entry["speedup_forward_backward_vs_sdpa_rearrange"] = round(
                base["forward_backward_ms"] / entry["forward_backward_ms"], 3)
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--configs", choices=["tiny", "real"], default=None,
                        help="tiny (CPU default) or real model shapes (CUDA default)")
    parser.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default=None,
                        help="default bf16 on CUDA, fp32 on the CPU")
    parser.add_argument("--grid", type=int, default=2, help="Grid Reshape cell size (default 2)")
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--iters", type=int, default=None)
    parser.add_argument("--only", default=None, help="run only configs whose name contains this string")
    parser.add_argument("--no-save", action="store_true", help="print results without writing JSON")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    on_gpu = device.type == "cuda"
    configs = REAL_CONFIGS if (args.configs or ("real" if on_gpu else "tiny")) == "real" else TINY_CONFIGS
    if args.only:
        configs = [c for c in configs if args.only in c[0]]
    dtype = DTYPES[args.dtype or ("bf16" if on_gpu else "fp32")]
    warmup = args.warmup if args.warmup is not None else (5 if on_gpu else 1)
    iters = args.iters if args.iters is not None else (20 if on_gpu else 3)
    xformers_reason = _xformers_usable(device)

    rows = []
    for cfg in configs:
        row = run_config(cfg, dtype, device, args.grid, warmup, iters, xformers_reason)
        rows.append(row)
        if on_gpu:
            torch.cuda.empty_cache()  # the tensors of the last config are gone with run_config's frame
        summary = ", ".join(f"{p} {e['forward_ms']:.3f}/{e['forward_backward_ms']:.3f} ms"
                            for p, e in row["paths"].items())
        print(f"{row['config']}: fwd/fwd+bwd {summary}", flush=True)

    notes = []
    if not on_gpu:
        notes.append("CPU run: Triton kernels skipped (they only run in the interpreter here, whose timings are "
                     "meaningless); CPU timings of the torch paths only exercise the script.")
    if xformers_reason is not None:
        notes.append(f"xformers skipped: {xformers_reason}")
    config = {"device": str(device), "dtype": str(dtype), "grid": args.grid, "patch_size": PATCH,
              "warmup": warmup, "iters": iters, "timing": "median milliseconds", "notes": notes}
    if not args.no_save:
        path = save_results("temporal_attention", rows, config)
        print(f"saved {path}")
    for note in notes:
        print("note:", note)
    return rows


if __name__ == "__main__":
    main()
