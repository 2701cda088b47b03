"""Hybrid window attention against full 3D attention (SDPA) as the number of frames grows.

At a fixed latent token grid (32x32 by default), the frame count grows; for each size the benchmark
times the attention core on q, k, v of shape (1, F*H*W, heads, head_dim):

- `full_sdpa`: `F.scaled_dot_product_attention` over all F*H*W tokens (what "full" layers compute);
- `window_flex`: `hybrid_window_attention(kernel="flex")`, compiled FlexAttention with the band +
  global-key block mask (compiled once per size, outside the timing);
- `window_blocks`: the plain PyTorch block-sparse kernel (the CPU training path), up to
  `--blocks-max-frames` frames.

    uv run benchmarks/window_attention.py                        # CPU, 32x32 tokens, 1..16 frames, forward
    uv run benchmarks/window_attention.py --device cuda --dtype bf16 --frames 13 25 49 \
        --height 64 --width 64 --backward                        # GPU: 49x64x64 tokens, forward + backward

On the CPU only forward passes are timed: PyTorch's compiled FlexAttention has no CPU backward (the
"blocks" kernel provides it). Peak memory: CUDA `max_memory_allocated` above the inputs; CPU the
process's RSS high-water mark (reset through /proc/self/clear_refs before each measurement) above the
RSS before it. The fitted exponent is the slope of log(time) against log(frames) over frames >= 2
(1 = linear, 2 = quadratic). Results go to benchmarks/results/window_attention-<device>.json.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ea_core.devices import DTYPES

sys.path.insert(0, str(Path(__file__).parent))
from _memory import reset_peak_rss, rss_bytes  # noqa: E402
from _results import save_results  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    p.add_argument("--frames", type=int, nargs="+", default=[1, 2, 4, 8, 16], help="latent frame counts")
    p.add_argument("--height", type=int, default=32, help="tokens per frame, vertically")
    p.add_argument("--width", type=int, default=32, help="tokens per frame, horizontally")
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--global-keys", type=int, default=1024, help="num_global_keys of the window attention")
    p.add_argument("--backward", action="store_true", help="time forward + backward (CUDA only)")
    p.add_argument("--blocks-max-frames", type=int, default=8, help="largest size the plain kernel is timed at")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--iters", type=int, default=2, help="timed runs per measurement (median)")
    p.add_argument("--out-dir", default=None)
    return p.parse_args(argv)


def measure(fn, device: torch.device, warmup: int, iters: int) -> dict:
    """Median seconds of fn() after `warmup` calls, and its peak memory above the state before it."""
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        exact = reset_peak_rss()
        base = rss_bytes("VmRSS")
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    if device.type == "cuda":
        peak, source = torch.cuda.max_memory_allocated() - base, "cuda.max_memory_allocated"
    else:
        hwm = rss_bytes("VmHWM")
        peak = None if hwm is None or base is None else hwm - base
        source = "VmHWM after clear_refs" if exact else "VmHWM (not resettable: upper bound)"
    times.sort()
    return {"time_s": times[len(times) // 2], "times_s": times,
            "peak_mib": None if peak is None else round(peak / 2**20, 1), "peak_source": source}


def fitted_exponent(frames: list[int], times: list[float]) -> float | None:
    """Least-squares slope of log(time) on log(frames), over frames >= 2."""
    pts = [(math.log(f), math.log(t)) for f, t in zip(frames, times) if f >= 2 and t]
    if len(pts) < 2:
        return None
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    return sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)


def measure_frames(args, frames: int, device: torch.device, dtype: torch.dtype, backward: bool) -> list[dict]:
    """Time full SDPA and the window kernels on one (1, frames*H*W, heads, head_dim) problem."""
    from ea_dit.window_attention import hybrid_window_attention, window_settings

    h, w = args.height, args.width
    length = frames * h * w
    gen = torch.Generator(device=device).manual_seed(0)
    q, k, v = (torch.randn(1, length, args.heads, args.head_dim, device=device, dtype=dtype, generator=gen,
                           requires_grad=backward) for _ in range(3))
    half, stride = window_settings(frames, h, w, num_global_keys=args.global_keys)

    def full_sdpa():
        return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)

    def window(kernel):
        return lambda: hybrid_window_attention(q, k, v, frames, h, w, num_global_keys=args.global_keys, kernel=kernel)

    methods = {"full_sdpa": full_sdpa, "window_flex": window("flex")}
    if frames <= args.blocks_max_frames and not backward:
        methods["window_blocks"] = window("blocks")
    rows = []
    for name, fn in methods.items():
        def step(fn=fn):
            if backward:
                out = fn()
                torch.autograd.grad(out, (q, k, v), torch.ones_like(out))
            else:
                with torch.no_grad():
                    fn()

        t0 = time.perf_counter()
        try:
            r = measure(step, device, args.warmup, args.iters)
        except torch.OutOfMemoryError as err:
            r = {"error": f"out of memory: {str(err).splitlines()[0]}"}
        r.update(frames=frames, tokens=length, method=name, wall_s=round(time.perf_counter() - t0, 1))
        if name.startswith("window"):  # keys per query: its window plus the global keys
            r.update(window_half=half, global_stride=stride,
                     keys_per_query=min(2 * half + 1, length) + (-(-length // stride) if stride else 0))
        rows.append(r)
        peak = r.get("peak_mib")
        print(f"{frames:>6}{length:>8}{name:>15}{r.get('time_s', float('nan')):>10.3f}"
              f"{peak if peak is not None else float('nan'):>10.1f}", flush=True)
    return rows


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    dtype = DTYPES[args.dtype]
    backward = args.backward
    if backward and device.type != "cuda":
        print("--backward needs CUDA (compiled FlexAttention has no CPU backward); timing forward only")
        backward = False
    rows = []
    print(f"{'frames':>6}{'tokens':>8}{'method':>15}{'time s':>10}{'peak MiB':>10}", flush=True)
    for frames in args.frames:
        rows += measure_frames(args, frames, device, dtype, backward)

    summary = {}
    for name in ("full_sdpa", "window_flex", "window_blocks"):
        pts = [(r["frames"], r["time_s"]) for r in rows if r["method"] == name and "time_s" in r]
        if pts:
            summary[f"{name}_time_exponent"] = fitted_exponent(*map(list, zip(*pts)))
    largest = max(args.frames)
    at = {r["method"]: r for r in rows if r["frames"] == largest and "time_s" in r}
    if "full_sdpa" in at and "window_flex" in at:
        summary["largest_frames"] = largest
        summary["flex_speedup_vs_full_at_largest"] = at["full_sdpa"]["time_s"] / at["window_flex"]["time_s"]
        if at["full_sdpa"].get("peak_mib") and at["window_flex"].get("peak_mib"):
            summary["flex_peak_over_full_at_largest"] = at["window_flex"]["peak_mib"] / at["full_sdpa"]["peak_mib"]
    summary["speedup_by_frames"] = {
        f: {m: rows_f["full_sdpa"]["time_s"] / rows_f[m]["time_s"] for m in ("window_flex", "window_blocks")
            if m in rows_f}
        for f in args.frames
        for rows_f in [{r["method"]: r for r in rows if r["frames"] == f and "time_s" in r}]
        if "full_sdpa" in rows_f}
    print({k: v for k, v in summary.items() if k != "speedup_by_frames"})
    config = {k: v for k, v in vars(args).items() if k != "out_dir"}
    config["backward"] = backward
    path = save_results("window_attention", {"measurements": rows, "summary": summary}, config, args.out_dir)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
