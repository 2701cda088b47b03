"""Samplers as plain functions, k-diffusion style: `sample_x(model_fn, x, schedule, steps, ...) -> x_0`.

    from ea_dit.samplers import sample_dpmpp_2m
    x = torch.randn(2, 4, 5, 8, 8)                       # x_T, standard normal
    latents = sample_dpmpp_2m(denoiser, x, GaussianDiffusion(), steps=15)

- `model_fn(x_t, t) -> (B, C or 2C, ...)`: the noise prediction eps (and, for a learned-sigma model, the
  variance value in the second half of the channels, used by DDPM only). `t` is int64 `(B,)` in
  [0, T): samplers only ever query the timesteps the model was trained on.
- `x`: the starting noise x_T `(B, C, ...)`, standard normal; the caller draws it (and so owns seeds).
- `schedule`: a :class:`~ea_dit.diffusion.GaussianDiffusion` (its `alphas_cumprod` abar_t).

Every sampler ends on clean data (abar = 1): the last step jumps from the smallest timestep queried to
x_0. With alpha_t = sqrt(abar_t), sigma_t = sqrt(1 - abar_t) the samplers are:

| function | method | order | steps by default |
|---|---|---|---|
| `sample_ddpm` | ancestral, learned variance (Ho et al. 2020; Nichol & Dhariwal 2021) | stochastic | all T |
| `sample_ddim` | DDIM (Song et al. 2021); eta = 0 is deterministic | 1 | uniform in t |
| `sample_euler` | Euler on the probability-flow ODE in sigma = sigma_t / alpha_t (Karras et al. 2022, Alg. 1 without churn) | 1 | Karras rho = 7 spacing |
| `sample_dpmpp_2m` | DPM-Solver++(2M), multistep, data prediction (Lu et al. 2022) | 2 | uniform in log-SNR |
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import torch

from .diffusion import Denoiser, GaussianDiffusion, spaced_timesteps

#: Draws standard normal noise shaped like its argument (default: `torch.randn_like`).
NoiseSampler = Callable[[torch.Tensor], torch.Tensor]
#: Wraps the step iterable (e.g. a tqdm bar).
Progress = Callable[[Iterable], Iterable]


def _check(x: torch.Tensor, schedule: GaussianDiffusion) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim < 2:
        raise ValueError(f"x must be a tensor (B, C, ...), got {getattr(x, 'shape', type(x))}")
    if not x.is_floating_point():
        raise ValueError(f"x must be floating point, got {x.dtype}")


def _timesteps(schedule: GaussianDiffusion, steps: int, timesteps: Sequence[int] | None) -> list[int]:
    """Descending model timesteps: `timesteps` if given, else `steps` evenly spaced over [0, T)."""
    ts = sorted({int(t) for t in timesteps}) if timesteps is not None else \
        spaced_timesteps(schedule.num_timesteps, steps)
    if not ts or ts[0] < 0 or ts[-1] >= schedule.num_timesteps:
        raise ValueError(f"timesteps must lie in [0, {schedule.num_timesteps}), got {ts}")
    return ts[::-1]


def _eps(model_fn: Denoiser, x: torch.Tensor, t: int) -> torch.Tensor:
    out = model_fn(x, torch.full((x.shape[0],), t, dtype=torch.long, device=x.device))
    return out[:, :x.shape[1]].to(x.dtype)


def _alpha_sigma(schedule: GaussianDiffusion, t: int) -> tuple[float, float]:
    """(alpha_t, sigma_t) in float64; t = -1 stands for clean data (1, 0)."""
    if t < 0:
        return 1.0, 0.0
    abar = float(schedule.alphas_cumprod[t])
    return math.sqrt(abar), math.sqrt(1.0 - abar)


def _wrap(progress: Progress | None, items: list) -> Iterable:
    return progress(items) if progress is not None else items


@torch.no_grad()
def sample_ddpm(model_fn: Denoiser, x: torch.Tensor, schedule: GaussianDiffusion, steps: int | None = None, *,
                noise: NoiseSampler | None = None, progress: Progress | None = None) -> torch.Tensor:
    """Ancestral sampling: x_{t-1} ~ p(x_{t-1} | x_t) with the model's learned variance (or the posterior
    variance for a model with C output channels), on `steps` evenly spaced timesteps (IDDPM respacing:
    the betas are recomputed from abar on the subsequence). `steps=None`: all T timesteps."""
    _check(x, schedule)
    noise = noise or torch.randn_like
    ts = spaced_timesteps(schedule.num_timesteps, steps or schedule.num_timesteps)
    sub = schedule.respace(ts)
    for i in _wrap(progress, list(range(len(ts)))[::-1]):
        t_sub = torch.full((x.shape[0],), i, dtype=torch.long, device=x.device)
        out = model_fn(x, torch.full_like(t_sub, ts[i])).to(x.dtype)
        mean, log_var, _ = sub.p_mean_variance(out, x, t_sub)
        x = mean + torch.exp(0.5 * log_var) * noise(x) if i > 0 else mean
    return x


@torch.no_grad()
def sample_ddim(model_fn: Denoiser, x: torch.Tensor, schedule: GaussianDiffusion, steps: int = 50, *,
                eta: float = 0.0, timesteps: Sequence[int] | None = None, noise: NoiseSampler | None = None,
                progress: Progress | None = None) -> torch.Tensor:
    """DDIM: x_s = alpha_s x0 + sqrt(sigma_s^2 - s^2) eps + s z, s = eta * (DDPM posterior std).

    eta = 0 is deterministic (a first-order ODE solver, = DPM-Solver-1); eta = 1 is DDPM-like.
    `timesteps` (any order) replaces the `steps` evenly spaced ones.
    """
    _check(x, schedule)
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    noise = noise or torch.randn_like
    ts = _timesteps(schedule, steps, timesteps)
    for t, t_next in _wrap(progress, list(zip(ts, [*ts[1:], -1]))):
        eps = _eps(model_fn, x, t)
        a, s = _alpha_sigma(schedule, t)
        a_next, s_next = _alpha_sigma(schedule, t_next)
        x0 = (x - s * eps) / a
        # eta * sqrt(posterior variance of q(x_next | x_t, x0)), with abar = alpha^2.
        std = eta * math.sqrt((s_next**2 / s**2) * (1 - a**2 / a_next**2))
        x = a_next * x0 + math.sqrt(max(s_next**2 - std**2, 0.0)) * eps
        if std > 0:
            x = x + std * noise(x)
    return x


def _log_snr(schedule: GaussianDiffusion) -> torch.Tensor:
    """lambda_t = log(alpha_t / sigma_t) = -log sigma for every trained timestep, float64 (T,), decreasing."""
    abar = schedule.alphas_cumprod
    return 0.5 * torch.log(abar / (1 - abar))


def _nearest_timesteps(schedule: GaussianDiffusion, lambdas: torch.Tensor) -> list[int]:
    """Descending trained timesteps with the nearest lambda to each wanted one (duplicates merged)."""
    nearest = (lambdas[:, None] - _log_snr(schedule)[None, :]).abs().argmin(1).tolist()
    return sorted(set(nearest), reverse=True)


def _ramp(steps: int, num_timesteps: int) -> torch.Tensor:
    if not 1 <= steps <= num_timesteps:
        raise ValueError(f"steps must be in [1, {num_timesteps}], got {steps}")
    return torch.linspace(0, 1, steps, dtype=torch.float64) if steps > 1 else torch.zeros(1, dtype=torch.float64)


def karras_timesteps(schedule: GaussianDiffusion, steps: int, rho: float = 7.0) -> list[int]:
    """Descending timesteps whose sigma = sigma_t / alpha_t follow Karras et al. (2022) eq. 5,
    sigma_i = (smax^(1/rho) + i / (n - 1) (smin^(1/rho) - smax^(1/rho)))^rho, each snapped to the trained
    timestep with the nearest log sigma. Where adjacent values snap to one timestep (only near sigma_min,
    from ~100 steps on) they are merged, so there may be a few fewer timesteps than `steps`."""
    lam = _log_snr(schedule)
    hi, lo = math.exp(-float(lam[-1]) / rho), math.exp(-float(lam[0]) / rho)
    return _nearest_timesteps(schedule, -rho * torch.log(hi + _ramp(steps, len(lam)) * (lo - hi)))


def log_snr_timesteps(schedule: GaussianDiffusion, steps: int) -> list[int]:
    """Descending timesteps evenly spaced in lambda = log(alpha_t / sigma_t) (DPM-Solver's "logSNR"
    spacing), snapped to the nearest trained timestep (merged where two snap to one, as above)."""
    lam = _log_snr(schedule)
    return _nearest_timesteps(schedule, lam[-1] + _ramp(steps, len(lam)) * (lam[0] - lam[-1]))


@torch.no_grad()
def sample_euler(model_fn: Denoiser, x: torch.Tensor, schedule: GaussianDiffusion, steps: int = 50, *,
                 rho: float = 7.0, timesteps: Sequence[int] | None = None,
                 progress: Progress | None = None) -> torch.Tensor:
    """Euler's method on the probability-flow ODE dx/dsigma = eps in the variance-exploding variable
    x / alpha_t, sigma = sigma_t / alpha_t (Karras et al. 2022, Algorithm 1 without churn), on the
    `karras_timesteps` (or the given `timesteps`). On the same timesteps it equals DDIM with eta = 0."""
    _check(x, schedule)
    ts = _timesteps(schedule, steps, timesteps) if timesteps is not None else karras_timesteps(schedule, steps, rho)
    a0, s0 = _alpha_sigma(schedule, ts[0])
    x_ve = x / a0
    for t, t_next in _wrap(progress, list(zip(ts, [*ts[1:], -1]))):
        a, s = _alpha_sigma(schedule, t)
        a_next, s_next = _alpha_sigma(schedule, t_next)
        eps = _eps(model_fn, x_ve * a, t)
        x_ve = x_ve + (s_next / a_next - s / a) * eps
    return x_ve


@torch.no_grad()
def sample_dpmpp_2m(model_fn: Denoiser, x: torch.Tensor, schedule: GaussianDiffusion, steps: int = 20, *,
                    timesteps: Sequence[int] | None = None, progress: Progress | None = None) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2): second-order multistep exponential integrator on
    the data prediction x0 = (x - sigma_t eps) / alpha_t, in lambda = log(alpha_t / sigma_t).

        x_next = (sigma_next / sigma_t) x - alpha_next (e^{-h} - 1) D,  h = lambda_next - lambda_t,
        D = (1 + 1 / 2r) x0_t - (1 / 2r) x0_prev,  r = h_prev / h     (D = x0_t on the first step)

    The last step (to sigma = 0, h = inf) returns the data prediction, as in k-diffusion. Default
    timesteps: `log_snr_timesteps` (even steps in lambda keep r near 1; with steps even in t the last
    steps grow so much in lambda that the extrapolation overshoots).
    """
    _check(x, schedule)
    ts = _timesteps(schedule, steps, timesteps) if timesteps is not None else log_snr_timesteps(schedule, steps)
    x0_prev, h_prev = None, None
    for t, t_next in _wrap(progress, list(zip(ts, [*ts[1:], -1]))):
        a, s = _alpha_sigma(schedule, t)
        a_next, s_next = _alpha_sigma(schedule, t_next)
        x0 = (x - s * _eps(model_fn, x, t)) / a
        if t_next < 0:
            return x0
        h = math.log(a_next / s_next) - math.log(a / s)
        if x0_prev is None:
            d = x0
        else:
            r = h_prev / h
            d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * x0_prev
        x = (s_next / s) * x - a_next * math.expm1(-h) * d
        x0_prev, h_prev = x0, h
    return x


#: Name -> sampler, for command lines (`--sampler`).
SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {
    "ddpm": sample_ddpm, "ddim": sample_ddim, "euler": sample_euler, "dpmpp_2m": sample_dpmpp_2m}
