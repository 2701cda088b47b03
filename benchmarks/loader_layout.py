"""Loader batch -> VAE input: the frames-first channels-last batch against the former contiguous one.

    uv run benchmarks/loader_layout.py                          # 2 clips x 25 frames x 256 x 256
    uv run benchmarks/loader_layout.py --frames 49 --size 512

Decoded clips are `(F, H, W, 3)` uint8. The loader used to build each sample as a contiguous
`(3, F, H, W)` float tensor (a strided copy), stack the samples (a second copy), and the VAE's
`to_frames` copied the batch back to frames-first channels-last `(B, F, 3, H, W)` (a third). Now each
sample is converted straight into its row of a `(B, F, H, W, 3)` batch, handed out as a
`(B, 3, F, H, W)` view (`torch.channels_last_3d`) that `to_frames` takes without copying. Both paths
give bit-identical VAE input (checked). Reported: time per batch for each path (same run, same
threads), their ratio, and the float bytes each path writes. Results go to
`benchmarks/results/loader_layout-<device>.json`.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from ea_data.loader import resize_center_crop
from ea_vae.layout import to_frames


def former_sample(frames: np.ndarray) -> torch.Tensor:
    """The former per-sample conversion (no resize needed here): contiguous `(3, F, H, W)` float."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
    return x.permute(1, 0, 2, 3).float().div_(127.5).sub_(1.0).contiguous()


def former(clips: list[np.ndarray]) -> torch.Tensor:
    return to_frames(torch.stack([former_sample(c) for c in clips]))


def current(clips: list[np.ndarray]) -> torch.Tensor:
    f, h, w, _ = clips[0].shape
    batch = torch.empty(len(clips), f, h, w, 3)
    for i, c in enumerate(clips):
        resize_center_crop(c, h, w, out=batch[i])
    return to_frames(batch.permute(0, 4, 1, 2, 3))


def timed(fn, clips, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(clips)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--frames", type=int, default=25)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--no-save", action="store_true")
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    clips = [rng.integers(0, 256, (args.frames, args.size, args.size, 3), dtype=np.uint8) for _ in range(args.batch)]
    if not torch.equal(former(clips), current(clips)):
        raise SystemExit("the two paths disagree")
    batch_bytes = args.batch * args.frames * args.size**2 * 3 * 4
    # former: float conversion, contiguous (3, F, H, W), stack, to_frames; current: the conversion only
    results = {"batch_mib": batch_bytes / 2**20,
               "float_bytes_written": {"former": 4 * batch_bytes, "current": batch_bytes}, "threads": {}}
    for n in args.threads:
        torch.set_num_threads(n)
        former(clips), current(clips)  # warm up
        t_former, t_current = timed(former, clips, args.repeats), timed(current, clips, args.repeats)
        results["threads"][str(n)] = {"former_ms": t_former * 1e3, "current_ms": t_current * 1e3,
                                      "speedup": t_former / t_current}
        print(f"{n} thread(s): former {t_former * 1e3:.1f} ms, current {t_current * 1e3:.1f} ms per batch "
              f"({results['batch_mib']:.0f} MiB) -> {t_former / t_current:.2f}x")
    if not args.no_save:
        from _results import save_results

        print(f"saved {save_results('loader_layout', results, vars(args))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
