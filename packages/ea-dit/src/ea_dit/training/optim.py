"""Optimiser set-up: AdamW (fused kernel where the device has one), Adam betas from the CLI, and LR warm-up +
constant / cosine / warm-up-stable-decay schedules."""

from __future__ import annotations

import math

import torch

SCHEDULES = ("constant", "cosine", "wsd")


def lr_factor(step: int, warmup_steps: int, total_steps: int, schedule: str = "constant",
              min_factor: float = 0.0, decay_fraction: float = 0.2, progress: float | None = None) -> float:
    """Multiplier of the base LR at optimiser step `step` (0-based).

    Linear warm-up from 1/warmup to 1 over `warmup_steps`, then
    - `constant`: 1;
    - `cosine`: decay from 1 to `min_factor` at the end of the run;
    - `wsd` (warm-up, stable, decay): 1 until the last `decay_fraction` of the run, then a linear decay
      to `min_factor` at its end. A run whose length is uncertain (a time limit) can explore at the full
      LR for most of it and still end on a settled model.

    `progress` is the fraction of the run done, in [0, 1]; by default the steps' fraction after the
    warm-up, `(step - warmup_steps) / (total_steps - warmup_steps)`. A time-limited run passes the
    larger of that and its elapsed fraction of the time limit.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if not 0.0 < decay_fraction <= 1.0:
        raise ValueError(f"decay_fraction must be in (0, 1], got {decay_fraction}")
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    if progress is None:
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    progress = min(1.0, max(0.0, progress))
    if schedule == "cosine":
        return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * progress))
    if progress <= 1.0 - decay_fraction:
        return 1.0
    decay = (1.0 - progress) / decay_fraction  # from 1 where the decay starts to 0 at the end
    return min_factor + (1 - min_factor) * decay


def parse_betas(text: str) -> tuple[float, float]:
    """Adam's `"beta1,beta2"` (a CLI string) -> `(beta1, beta2)`, each in [0, 1)."""
    try:
        betas = tuple(float(v) for v in text.split(","))
    except ValueError:
        betas = ()
    if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
        raise ValueError(f"Adam betas must be two numbers in [0, 1) like '0.9,0.999', got {text!r}")
    return betas


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    """Set every parameter group's learning rate (stateless: the schedule is a function of the step)."""
    for group in opt.param_groups:
        group["lr"] = lr


def adamw(params, lr: float, weight_decay: float, device: torch.device, betas=(0.9, 0.999)) -> torch.optim.AdamW:
    """AdamW with the fused kernel on CUDA (one launch for all parameters), the foreach path elsewhere."""
    params = list(params)
    fused = device.type == "cuda"
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=betas, fused=fused or None)
