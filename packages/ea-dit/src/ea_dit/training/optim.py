"""Optimiser set-up: AdamW (fused kernel where the device has one) and LR warm-up + constant / cosine."""

from __future__ import annotations

import math

import torch


def lr_factor(step: int, warmup_steps: int, total_steps: int, schedule: str = "constant",
              min_factor: float = 0.0) -> float:
    """Multiplier of the base LR at optimiser step `step` (0-based).

    Linear warm-up from 1/warmup to 1 over `warmup_steps`, then `constant` (1) or `cosine` decay from
    1 to `min_factor` at `total_steps`.
    """
    if schedule not in ("constant", "cosine"):
        raise ValueError(f"schedule must be 'constant' or 'cosine', got {schedule!r}")
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * progress))


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    """Set every parameter group's learning rate (stateless: the schedule is a function of the step)."""
    for group in opt.param_groups:
        group["lr"] = lr


def adamw(params, lr: float, weight_decay: float, device: torch.device, betas=(0.9, 0.999)) -> torch.optim.AdamW:
    """AdamW with the fused kernel on CUDA (one launch for all parameters), the foreach path elsewhere."""
    params = list(params)
    fused = device.type == "cuda"
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=betas, fused=fused or None)
