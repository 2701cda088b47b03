"""Reward backpropagation: sample with gradients through chosen denoising steps, then score.

EasyAnimate post-trains the DiT by running the whole classifier-free-guided sampling loop under autograd
and backpropagating a differentiable reward of the decoded frames (`scripts/train_reward_lora.py`).
Back-propagating through every step would store every step's activations, so gradients are kept only
through *chosen* steps:

- the model is called with autograd at the chosen steps only (each call checkpointed, so its
  activations are recomputed in the backward instead of stored); at every other step it runs under
  `torch.no_grad()` and its prediction is a constant;
- the sampler's update `x_next = a x0(x, eps) + b eps` stays in the graph, so the gradient of the reward
  still flows from the last step back to every chosen step (through the linear part of the skipped
  steps), and reaches the parameters only through the chosen model calls.

Strategies (:func:`choose_grad_steps`): "last" (the final step), "last_k" (the final k) and "random"
(k steps drawn at random; one by default). The sampler is DDIM (eta = 0), the deterministic
first-order solver of :mod:`ea_dit.samplers`, on the same timesteps.

The loss (:func:`reward_loss`) is the distance of the reward from its maximum, `scale * |max - r|`,
averaged (aesthetic: max 10, scale 0.1; HPS: max 1).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch
from torch.utils.checkpoint import checkpoint

from .diffusion import Denoiser, GaussianDiffusion
from .samplers import _alpha_sigma, _check, _timesteps

GRAD_STRATEGIES = ("last", "last_k", "random")

__all__ = ["GRAD_STRATEGIES", "choose_grad_steps", "sample_ddim_with_grad", "reward_loss"]


def choose_grad_steps(num_steps: int, strategy: str = "last", k: int = 1,
                      generator: random.Random | None = None) -> list[int]:
    """Indices (0 = first, noisiest step) of the sampling steps that keep gradients.

    "last": [num_steps - 1]; "last_k": the final k; "random": k distinct steps drawn with `generator`.
    """
    if strategy not in GRAD_STRATEGIES:
        raise ValueError(f"gradient strategy {strategy!r} is unknown; choose one of {', '.join(GRAD_STRATEGIES)}")
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if not 1 <= k <= num_steps:
        raise ValueError(f"k = {k} gradient steps must lie in [1, num_steps = {num_steps}]")
    if strategy == "last":
        return [num_steps - 1]
    if strategy == "last_k":
        return list(range(num_steps - k, num_steps))
    return sorted((generator or random).sample(range(num_steps), k))


def sample_ddim_with_grad(model_fn: Denoiser, x: torch.Tensor, schedule: GaussianDiffusion, steps: int = 20, *,
                          grad_steps: Sequence[int] = (-1,), timesteps: Sequence[int] | None = None,
                          checkpoint_steps: bool = True) -> torch.Tensor:
    """Deterministic DDIM from noise `x` (B, C, ...) to x_0, differentiable through the chosen steps.

    Args:
        model_fn: `model_fn(x_t, t) -> eps` (and variance channels, ignored), e.g. a
            :func:`~ea_dit.diffusion.classifier_free_guidance` wrapper of the DiT.
        x: x_T, standard normal; may itself require grad.
        steps, timesteps: as :func:`ea_dit.samplers.sample_ddim`.
        grad_steps: indices of the steps whose model call is differentiated (negative from the end);
            see :func:`choose_grad_steps`.
        checkpoint_steps: recompute each differentiated model call in the backward (activation
            checkpointing) instead of storing its activations.

    Returns:
        x_0 (B, C, ...) in the dtype of x; without gradient steps it equals `sample_ddim(..., eta=0)`.
    """
    _check(x, schedule)
    ts = _timesteps(schedule, steps, timesteps)
    chosen = {i % len(ts) for i in grad_steps}
    bad = [i for i in grad_steps if not -len(ts) <= i < len(ts)]
    if bad:
        raise ValueError(f"grad_steps {bad} are outside the {len(ts)} sampling steps")
    channels = x.shape[1]

    def eps_at(x_t: torch.Tensor, t: int) -> torch.Tensor:
        out = model_fn(x_t, torch.full((x_t.shape[0],), t, dtype=torch.long, device=x_t.device))
        return out[:, :channels].to(x_t.dtype)

    for i, (t, t_next) in enumerate(zip(ts, [*ts[1:], -1])):
        if i in chosen and torch.is_grad_enabled():
            eps = checkpoint(eps_at, x, t, use_reentrant=False) if checkpoint_steps else eps_at(x, t)
        else:
            with torch.no_grad():
                eps = eps_at(x, t)
        a, s = _alpha_sigma(schedule, t)
        a_next, s_next = _alpha_sigma(schedule, t_next)
        x = a_next * (x - s * eps) / a + s_next * eps
    return x


def reward_loss(reward: torch.Tensor, max_reward: float, scale: float = 1.0) -> torch.Tensor:
    """`scale * |max_reward - reward|`, averaged: the distance of the reward from its maximum."""
    if not isinstance(reward, torch.Tensor) or not reward.is_floating_point():
        raise TypeError(f"reward must be a floating-point tensor, got {type(reward).__name__}")
    return (scale * (max_reward - reward).abs()).mean()
