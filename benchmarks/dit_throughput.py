"""Forward+backward training throughput of VideoDiT, and diffusers' PixArt of the same size side by side.

    uv run benchmarks/dit_throughput.py                       # small CPU config, about a minute on 2 cores
    uv run benchmarks/dit_throughput.py --preset xl-16f      # GPU: PixArt-XL/2 size, 16 latent frames, 64x64
    uv run benchmarks/dit_throughput.py --preset xl-49f --backends sdpa triton

Each case builds a model with random weights; after `warmup` untimed steps, the cases are timed
round-robin (one forward + MSE loss + backward of each per round, `steps` rounds, CUDA-synchronised) and
the median is reported, so load changes on a shared machine hit every case alike. Reported per case:

- `tokens_per_s`: B * F * (H/p) * (W/p) image tokens per second of training step;
- `model_tflops_per_step`: FLOPs of one forward+backward counted once with
  `torch.utils.flop_counter.FlopCounterMode` on the SDPA path (matmuls, convs and attention; no
  recomputation from checkpointing - "model FLOPs"); the Triton kernels do the same math;
- `cpu_seconds_per_step` (CPU only): process CPU time, a steadier measure when other jobs share the
  cores (the CPU default runs one thread, so it is the per-core cost);
- `mfu` (GPU only): achieved FLOP/s over the device's dense bf16/fp16 peak (`--peak-tflops` overrides).

The image comparison runs diffusers' `PixArtTransformer2DModel` and VideoDiT loaded from the same folder
(`VideoDiT.from_pretrained`), at F = 1, once without motion modules (identical math) and once with them.
Results go to `benchmarks/results/dit_throughput-<device>.json`.

Multi-process training (`--nproc N`): the same training step (forward, loss, backward, AdamW step) under
`torchrun --nproc-per-node 1` and `N`, with DDP and with FSDP2 (`fully_shard` per block; bf16 parameters
for compute when the dtype is bf16), one batch per process (weak scaling). Reported per run: tokens/s
per process, peak memory and (GPU) MFU; per mode: the scaling efficiency
`tokens/s of N processes / (N x tokens/s of 1 process)`. On the CPU each process gets one thread (gloo);
on GPUs one device per process (NCCL). Results go to `benchmarks/results/dit_throughput_nproc-<device>.json`.

    uv run benchmarks/dit_throughput.py --nproc 2                       # CPU, gloo, about two minutes
    uv run benchmarks/dit_throughput.py --nproc 8 --preset xl-16f       # GPUs: MFU and memory, DDP vs FSDP
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from _results import save_results  # noqa: E402

from ea_core.devices import DTYPES

PRESETS = {
    # hidden/depth/heads, latent size, frames, batch, caption tokens
    "cpu-small": dict(hidden=256, depth=4, heads=4, size=32, frames=4, batch=1, text_len=32, caption=256,
                      dtype="fp32", ckpt=False),
    "xl-16f": dict(hidden=1152, depth=28, heads=16, size=64, frames=16, batch=1, text_len=120, caption=4096,
                   dtype="bf16", ckpt=False),
    "xl-49f": dict(hidden=1152, depth=28, heads=16, size=64, frames=49, batch=1, text_len=120, caption=4096,
                   dtype="bf16", ckpt=True),
}
# dense tensor-core peaks (TFLOP/s) for bf16/fp16 by device-name fragment
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "4090": 165.0}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="model/input size (default: cpu-small on the CPU, xl-16f on a GPU)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="override the preset's dtype")
    p.add_argument("--frames", type=int, default=None, help="override the preset's latent frames")
    p.add_argument("--backends", nargs="+", default=None,
                   help="attention backends to time (default: sdpa on the CPU; sdpa and triton on a GPU)")
    p.add_argument("--steps", type=int, default=None, help="timed rounds (default 5 CPU / 10 GPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 1 CPU / 3 GPU)")
    p.add_argument("--no-pixart", action="store_true", help="skip the diffusers PixArt comparison")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads (default 1 on the CPU: per-core numbers stay comparable on a shared machine)")
    p.add_argument("--peak-tflops", type=float, default=None, help="device peak for MFU (default: by GPU name)")
    p.add_argument("--out-dir", default=None, help="results folder (default benchmarks/results)")
    p.add_argument("--nproc", type=int, default=None,
                   help="multi-process mode: 1 vs N processes under torchrun, DDP and FSDP2")
    p.add_argument("--parallel", nargs="+", default=["ddp", "fsdp"], help="modes for --nproc (ddp fsdp)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: result file of one torchrun
    return p.parse_args(argv)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _step_fn(model, inputs, diffusers_model: bool):
    latents, t, text, mask = inputs

    def step():
        if diffusers_model:
            out = model(latents[:, :, 0], encoder_hidden_states=text, timestep=t,
                        encoder_attention_mask=mask.long()).sample
        else:
            out = model(latents, t, text, mask)
        loss = out.float().square().mean()
        loss.backward()
        return loss

    return step


def _count_flops(step) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return float(counter.get_total_flops())


def _inputs(cfg: dict, frames: int, device, dtype, caption: int):
    g = torch.Generator().manual_seed(0)
    b, s = cfg["batch"], cfg["size"]
    latents = torch.randn(b, 4, frames, s, s, generator=g).to(device, dtype)
    t = torch.randint(0, 1000, (b,), generator=g).float().to(device)
    text = torch.randn(b, cfg["text_len"], caption, generator=g).to(device, dtype)
    mask = torch.ones(b, cfg["text_len"], dtype=torch.bool, device=device)
    mask[:, cfg["text_len"] // 2:] = False  # half the caption is padding, as for a short prompt
    return latents, t, text, mask


def _tokens(latents: torch.Tensor, patch: int = 2) -> int:
    return latents.shape[0] * latents.shape[2] * (latents.shape[3] // patch) * (latents.shape[4] // patch)


def _run_cases(cases: list[dict], device, steps: int, warmup: int, peak: float | None) -> list[dict]:
    """Time the cases round-robin (one step of each per round), so load drift on a shared machine hits all
    of them alike; report the median wall time and the median process CPU time per step."""
    for case in cases:
        for _ in range(warmup):
            case["step"]()
            case["model"].zero_grad(set_to_none=True)
        case["wall"], case["cpu"], case["mem"] = [], [], 0.0
    for _ in range(steps):
        for case in cases:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            _sync(device)
            wall, cpu = time.perf_counter(), time.process_time()
            case["step"]()
            _sync(device)
            case["wall"].append(time.perf_counter() - wall)
            case["cpu"].append(time.process_time() - cpu)
            case["model"].zero_grad(set_to_none=True)
            if device.type == "cuda":
                case["mem"] = max(case["mem"], torch.cuda.max_memory_allocated(device) / 2**30)
    rows = []
    for case in cases:
        sec, cpu, flops = statistics.median(case["wall"]), statistics.median(case["cpu"]), case["flops"]
        row = {"case": case["name"], "tokens_per_step": case["tokens"], "seconds_per_step": round(sec, 5),
               "tokens_per_s": round(case["tokens"] / sec, 1), "model_tflops_per_step": round(flops / 1e12, 4),
               "achieved_tflops": round(flops / sec / 1e12, 3)}
        if device.type == "cuda":
            row["peak_memory_gib"] = round(case["mem"], 2)
            if peak:
                row["mfu"] = round(flops / sec / (peak * 1e12), 4)
        else:
            row["cpu_seconds_per_step"] = round(cpu, 5)  # all threads; robust to other load on the machine
            row["tokens_per_cpu_s"] = round(case["tokens"] / cpu, 1)
        print(f"{row['case']:40s} {sec:9.4f} s/step {row['tokens_per_s']:12.1f} tok/s "
              f"{row['achieved_tflops']:8.3f} TFLOP/s" + (f"  MFU {row['mfu']:.3f}" if "mfu" in row else "")
              + (f"  ({row['tokens_per_cpu_s']:.1f} tok per CPU-s)" if "tokens_per_cpu_s" in row else ""),
              flush=True)
        rows.append(row)
    return rows


def _case(name: str, model, inputs, diffusers_model: bool = False, flop_step=None) -> dict:
    step = _step_fn(model, inputs, diffusers_model)
    flops = _count_flops(flop_step or step)
    model.zero_grad(set_to_none=True)
    return {"name": name, "model": model, "step": step, "flops": flops, "tokens": _tokens(inputs[0])}


# ------------------------------------------------------------------------------------------------
# multi-process training (--nproc)
# ------------------------------------------------------------------------------------------------


def _worker(args) -> None:
    """One torchrun process: time training steps of the wrapped model; rank 0 writes the summary."""
    import torch.distributed as dist

    from ea_dit import VideoDiT, VideoDiTConfig
    from ea_dit.training.distributed import apply_fsdp, init_distributed, wrap_ddp

    ctx = init_distributed(args.device or "auto")
    on_gpu = ctx.device.type == "cuda"
    cfg = dict(PRESETS[args.preset or ("xl-16f" if on_gpu else "cpu-small")])
    dtype = DTYPES[args.dtype or cfg["dtype"]]
    frames = args.frames or cfg["frames"]
    parallel = args.parallel[0]
    torch.manual_seed(0)
    config = VideoDiTConfig(hidden_size=cfg["hidden"], depth=cfg["depth"], num_heads=cfg["heads"],
                            sample_size=cfg["size"], caption_channels=cfg["caption"],
                            gradient_checkpointing=cfg["ckpt"])
    model = VideoDiT(config).to(ctx.device).train()
    inputs = _inputs(cfg, frames, ctx.device, dtype if parallel == "ddp" else torch.float32, cfg["caption"])
    flops = _count_flops(_step_fn(model, inputs, False))  # per process, fp32 model before wrapping
    model.zero_grad(set_to_none=True)
    if parallel == "fsdp":
        apply_fsdp(model, model.blocks, param_dtype=dtype if dtype != torch.float32 else None)
        train_model = model
    else:
        model.to(dtype)
        train_model = wrap_ddp(model, ctx) if dist.is_initialized() else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=on_gpu or None)
    latents, t, text, mask = inputs

    def step():
        out = train_model(latents, t, text, mask)
        out.float().square().mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    steps = args.steps or (10 if on_gpu else 5)
    for _ in range(args.warmup if args.warmup is not None else (3 if on_gpu else 1)):
        step()
    if on_gpu:
        torch.cuda.reset_peak_memory_stats(ctx.device)
    times = []
    for _ in range(steps):
        if dist.is_initialized():
            dist.barrier()
        _sync(ctx.device)
        t0 = time.perf_counter()
        step()
        _sync(ctx.device)
        times.append(time.perf_counter() - t0)
    sec = statistics.median(times)
    tokens = _tokens(latents)
    row = {"parallel": parallel, "nproc": ctx.world_size, "seconds_per_step": round(sec, 5),
           "tokens_per_s_per_process": round(tokens / sec, 1), "tokens_per_s_total": round(tokens / sec * ctx.world_size, 1),
           "model_tflops_per_step_per_process": round(flops / 1e12, 4)}
    if on_gpu:
        row["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(ctx.device) / 2**30, 2)
        peak = args.peak_tflops or next((v for k, v in PEAK_TFLOPS.items() if k in torch.cuda.get_device_name()), None)
        if peak:
            row["mfu"] = round(flops / sec / (peak * 1e12), 4)
    rows = [row]
    if dist.is_initialized():
        rows = [None] * ctx.world_size
        dist.all_gather_object(rows, row)
    if ctx.is_main:
        slowest = max(rows, key=lambda r: r["seconds_per_step"])  # a step ends when the slowest process ends
        summary = {**slowest, "tokens_per_s_total": round(tokens / slowest["seconds_per_step"] * ctx.world_size, 1),
                   "preset": args.preset or ("xl-16f" if on_gpu else "cpu-small"), "frames": frames,
                   "dtype": str(dtype).replace("torch.", ""), "per_process": rows}
        Path(args.worker).write_text(json.dumps(summary))
    if dist.is_initialized():
        dist.destroy_process_group()


def main_nproc(args) -> None:
    """1 vs N processes for each mode; scaling efficiency = N-process tokens/s / (N x 1-process tokens/s)."""
    n = args.nproc
    on_gpu = torch.cuda.is_available() and args.device != "cpu"
    passthrough = [a for pair in (("--preset", args.preset), ("--device", args.device), ("--dtype", args.dtype),
                                  ("--frames", args.frames), ("--steps", args.steps), ("--warmup", args.warmup),
                                  ("--peak-tflops", args.peak_tflops)) if pair[1] is not None for a in map(str, pair)]
    env = {**os.environ}
    if not on_gpu:
        env["OMP_NUM_THREADS"] = str(args.threads or 1)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for parallel in args.parallel:
            runs = {}
            for procs in sorted({1, n}):
                out = Path(tmp) / f"{parallel}-{procs}.json"
                cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(procs),
                       str(Path(__file__).resolve()), "--worker", str(out), "--parallel", parallel, *passthrough]
                print("$", " ".join(cmd), flush=True)
                subprocess.run(cmd, check=True, env=env)
                runs[procs] = json.loads(out.read_text())
                r = runs[procs]
                print(f"{parallel} x{procs}: {r['tokens_per_s_per_process']:.1f} tok/s per process, "
                      f"{r['tokens_per_s_total']:.1f} total" + (f", MFU {r['mfu']:.3f}" if "mfu" in r else "")
                      + (f", peak {r['peak_memory_gib']} GiB" if "peak_memory_gib" in r else ""), flush=True)
            eff = runs[n]["tokens_per_s_total"] / (n * runs[1]["tokens_per_s_total"])
            print(f"{parallel}: scaling efficiency {n} vs 1 process: {eff:.3f}", flush=True)
            results += [runs[1], {**runs[n], "scaling_efficiency_vs_1": round(eff, 4)}]
    config = {"nproc": n, "parallel": args.parallel, "backend": "nccl" if on_gpu else "gloo",
              "threads_per_process": None if on_gpu else int(env["OMP_NUM_THREADS"]), "weak_scaling": True}
    path = save_results("dit_throughput_nproc", results, config, out_dir=args.out_dir)
    print(f"wrote {path}")


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        return _worker(args)
    if args.nproc:
        return main_nproc(args)
    from ea_dit import VideoDiT, VideoDiTConfig

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    on_gpu = device.type == "cuda"
    preset = args.preset or ("xl-16f" if on_gpu else "cpu-small")
    cfg = dict(PRESETS[preset])
    dtype = DTYPES[args.dtype or cfg["dtype"]]
    frames = args.frames or cfg["frames"]
    backends = args.backends or (["sdpa", "triton"] if on_gpu else ["sdpa"])
    steps = args.steps or (10 if on_gpu else 5)
    warmup = args.warmup if args.warmup is not None else (3 if on_gpu else 1)
    peak = args.peak_tflops
    if peak is None and on_gpu:
        name = torch.cuda.get_device_name(device)
        peak = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    if not on_gpu or args.threads:
        torch.set_num_threads(args.threads or 1)
    torch.manual_seed(0)

    def build(**kw) -> VideoDiT:
        config = VideoDiTConfig(hidden_size=cfg["hidden"], depth=cfg["depth"], num_heads=cfg["heads"],
                                sample_size=cfg["size"], caption_channels=cfg["caption"],
                                gradient_checkpointing=cfg["ckpt"], **kw)
        return VideoDiT(config).to(device, dtype).train()

    cases = []
    for backend in backends:
        model = build(attention_backend=backend)
        inputs = _inputs(cfg, frames, device, dtype, cfg["caption"])
        flop_step = None
        if backend != "sdpa":  # FlopCounterMode cannot see inside Triton kernels: count the SDPA twin
            twin = build(attention_backend="sdpa")
            flop_step = _step_fn(twin, inputs, False)
        cases.append(_case(f"videodit[{backend}] F={frames}", model, inputs, flop_step=flop_step))
        twin = flop_step = None

    if not args.no_pixart:
        import diffusers

        pixart = diffusers.PixArtTransformer2DModel(
            num_attention_heads=cfg["heads"], attention_head_dim=cfg["hidden"] // cfg["heads"], in_channels=4,
            out_channels=8, num_layers=cfg["depth"], cross_attention_dim=cfg["hidden"], sample_size=cfg["size"],
            caption_channels=cfg["caption"])
        if cfg["ckpt"]:
            pixart.enable_gradient_checkpointing()
        inputs = _inputs(cfg, 1, device, dtype, cfg["caption"])
        with tempfile.TemporaryDirectory() as tmp:
            pixart.save_pretrained(tmp)
            cases.append(_case("diffusers_pixart F=1", pixart.to(device, dtype).train(), inputs,
                               diffusers_model=True))
            for mm in (False, True):
                model = VideoDiT.from_pretrained(tmp, motion_module=mm, long_skip=mm,
                                                 gradient_checkpointing=cfg["ckpt"]).to(device, dtype).train()
                name = "videodit F=1 " + ("(+motion modules, skips)" if mm else "(no motion modules)")
                cases.append(_case(name, model, inputs))

    results = _run_cases(cases, device, steps, warmup, peak)
    config = {"preset": preset, **cfg, "frames": frames, "dtype": str(dtype).replace("torch.", ""),
              "backends": backends, "steps": steps, "warmup": warmup, "peak_tflops": peak,
              "threads": torch.get_num_threads()}
    path = save_results("dit_throughput", results, config, out_dir=args.out_dir)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
