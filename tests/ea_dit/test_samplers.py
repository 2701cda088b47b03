"""Samplers against closed forms: oracle denoisers for data distributions whose exact answer is known.

- point mass at x*: the exact noise is known, every sampler must land on x*;
- Gaussian data N(mu, s^2): the marginals stay Gaussian, so the probability-flow ODE is the affine map
  between them (x_0 = mu + s (x_T - m_T) / sqrt(v_T)); its solution is the reference for the ODE
  solvers' convergence order, and DDPM with the exact reverse variance must draw exactly N(mu, s^2).
"""

import math

import pytest
import torch

from ea_dit.diffusion import GaussianDiffusion, spaced_timesteps
from ea_dit.samplers import (
    SAMPLERS,
    karras_timesteps,
    log_snr_timesteps,
    sample_ddim,
    sample_ddpm,
    sample_dpmpp_2m,
    sample_euler,
)

MU, S = 0.3, 0.5


@pytest.fixture(scope="module")
def schedule():
    return GaussianDiffusion()


def _abar(schedule, t, like):
    return schedule.alphas_cumprod[t].to(like.dtype).view(-1, *[1] * (like.ndim - 1))


def gaussian_oracle(schedule):
    """The exact eps = E[noise | x_t] for data N(MU, S^2) (and v = -1: the posterior variance)."""

    def model_fn(x, t):
        abar = _abar(schedule, t, x)
        x0 = MU + abar.sqrt() * S**2 / (abar * S**2 + 1 - abar) * (x - abar.sqrt() * MU)
        eps = (x - abar.sqrt() * x0) / (1 - abar).sqrt()
        return torch.cat([eps, -torch.ones_like(eps)], 1)

    return model_fn


def exact_ode_solution(schedule, x_T, t_last=0):
    """The probability-flow ODE from t = T - 1 to t_last, then the exact denoiser's x0 there (the last
    step of every sampler goes from the smallest queried timestep straight to the data prediction)."""
    a_T, a = float(schedule.alphas_cumprod[-1]), float(schedule.alphas_cumprod[t_last])
    v_T, v = a_T * S**2 + 1 - a_T, a * S**2 + 1 - a
    x = math.sqrt(a) * MU + math.sqrt(v / v_T) * (x_T - math.sqrt(a_T) * MU)
    return MU + math.sqrt(a) * S**2 / v * (x - math.sqrt(a) * MU)


def _x_T(n=64, seed=0):
    return torch.randn(n, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_point_mass_oracle_lands_on_the_data_point(schedule, name):
    target = torch.tensor([0.5, -0.25, 0.8], dtype=torch.float64).view(1, 3, 1, 1, 1)

    def oracle(x, t):  # the exact noise when the data distribution is a point mass at `target`
        abar = _abar(schedule, t, x)
        eps = (x - abar.sqrt() * target) / (1 - abar).sqrt()
        return torch.cat([eps, -torch.ones_like(eps)], 1)

    x = torch.randn(2, 3, 1, 1, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(2)
    out = SAMPLERS[name](oracle, x, schedule, 10, **({"noise": lambda y: torch.randn(
        y.shape, generator=g, dtype=y.dtype)} if name == "ddpm" else {}))
    torch.testing.assert_close(out, target.expand(2, -1, -1, -1, -1), atol=1e-6, rtol=0)


@pytest.mark.parametrize("sampler, order", [(sample_ddim, 1), (sample_euler, 1), (sample_dpmpp_2m, 2)])
def test_ode_solvers_converge_at_their_order(schedule, sampler, order):
    # Doubling the steps divides the global error by 2^order (measured where the asymptotics hold).
    x = _x_T()
    ref = exact_ode_solution(schedule, x)
    err = [(sampler(gaussian_oracle(schedule), x, schedule, n) - ref).abs().max().item() for n in (25, 50, 100)]
    assert err[2] < err[1] < err[0]
    for coarse, fine in zip(err, err[1:]):
        assert 2**order * 0.8 < coarse / fine < 2**order * 1.25, err


def test_dpmpp_2m_at_15_steps_beats_ddim_at_50(schedule):
    x = _x_T()
    ref = exact_ode_solution(schedule, x)
    oracle = gaussian_oracle(schedule)
    err_dpm = (sample_dpmpp_2m(oracle, x, schedule, 15) - ref).abs().max().item()
    err_ddim = (sample_ddim(oracle, x, schedule, 50) - ref).abs().max().item()
    assert err_dpm < 0.5 * err_ddim, (err_dpm, err_ddim)


def test_euler_equals_ddim_on_the_same_timesteps(schedule):
    # Karras et al. (2022): DDIM is Euler's method on the ODE in x / alpha and sigma / alpha.
    x, ts = _x_T(8), karras_timesteps(schedule, 12)
    oracle = gaussian_oracle(schedule)
    torch.testing.assert_close(sample_euler(oracle, x, schedule, timesteps=ts),
                               sample_ddim(oracle, x, schedule, timesteps=ts), atol=1e-10, rtol=0)


def test_timestep_spacings(schedule):
    assert spaced_timesteps(1000, 5) == [0, 250, 500, 749, 999]
    lam = 0.5 * torch.log(schedule.alphas_cumprod / (1 - schedule.alphas_cumprod))
    for ts in (karras_timesteps(schedule, 10), log_snr_timesteps(schedule, 10)):
        assert len(ts) == 10 and ts[0] == 999 and ts[-1] == 0 and ts == sorted(ts, reverse=True)
    steps = lam[log_snr_timesteps(schedule, 10)].diff()  # even in lambda up to the snapping
    assert (steps - steps.mean()).abs().max() < 0.1 * steps.mean()
    sig = torch.exp(-lam[karras_timesteps(schedule, 10)]) ** (1 / 7)  # even in sigma^(1/rho)
    assert (sig.diff() - sig.diff().mean()).abs().max() < 0.05 * sig.diff().abs().mean()
    with pytest.raises(ValueError, match="steps must be in"):
        sample_dpmpp_2m(gaussian_oracle(schedule), _x_T(2), schedule, 0)


def test_ddpm_with_the_exact_reverse_variance_draws_the_data_distribution(schedule):
    # For Gaussian data p(x_{t-1} | x_t) is Gaussian with variance v_{t-1} - alpha_t v_{t-1}^2 / v_t
    # (v_t = abar_t S^2 + 1 - abar_t): the oracle returns it through the learned-range value, and
    # ancestral sampling must then produce N(MU, S^2) exactly.
    abar = schedule.alphas_cumprod
    v = abar * S**2 + 1 - abar
    v_prev = torch.cat([torch.tensor([S**2], dtype=torch.float64), v[:-1]])
    true_var = v_prev - (1 - schedule.betas) * v_prev**2 / v
    lo, hi = schedule.posterior_log_variance_clipped, torch.log(schedule.betas)
    value = (2 * (torch.log(true_var) - lo) / (hi - lo) - 1)
    value[0] = -1.0  # no noise is added on the last step
    eps_only = gaussian_oracle(schedule)

    def oracle(x, t):
        eps = eps_only(x, t)[:, :1]
        return torch.cat([eps, value[t].to(x.dtype).view(-1, 1, 1).expand_as(eps)], 1)

    n = 2000  # independent samples along the last axis of one batch element: per-step cost stays tiny
    g = torch.Generator().manual_seed(3)
    out = sample_ddpm(oracle, torch.randn(1, 1, n, dtype=torch.float64, generator=g), schedule,
                      noise=lambda y: torch.randn(y.shape, generator=g, dtype=y.dtype))
    # 5 standard errors of the sample mean and the sample std.
    assert abs(out.mean().item() - MU) < 5 * S / math.sqrt(n)
    assert abs(out.std().item() - S) < 5 * S / math.sqrt(2 * n)


def test_ddim_eta_one_is_stochastic_and_eta_zero_is_not(schedule):
    oracle, x = gaussian_oracle(schedule), _x_T(4)
    g = torch.Generator().manual_seed(0)
    noise = lambda y: torch.randn(y.shape, generator=g, dtype=y.dtype)  # noqa: E731
    a, b = (sample_ddim(oracle, x, schedule, 20, eta=1.0, noise=noise) for _ in range(2))
    assert (a - b).abs().max() > 1e-3
    c, d = (sample_ddim(oracle, x, schedule, 20, eta=0.0, noise=noise) for _ in range(2))
    assert torch.equal(c, d)


def gaussian_v_oracle(schedule):
    """The same exact denoiser as gaussian_oracle, written as a v-prediction model (v = alpha eps - sigma x0),
    with the formulas of Salimans & Ho (2022), not the package's conversion."""

    def model_fn(x, t):
        abar = _abar(schedule, t, x)
        x0 = MU + abar.sqrt() * S**2 / (abar * S**2 + 1 - abar) * (x - abar.sqrt() * MU)
        eps = (x - abar.sqrt() * x0) / (1 - abar).sqrt()
        return torch.cat([abar.sqrt() * eps - (1 - abar).sqrt() * x0, -torch.ones_like(eps)], 1)

    return model_fn


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_v_prediction_model_samples_like_the_noise_model(schedule, name):
    """A v-prediction model wrapped by noise_predictor drives every sampler to the same answer as the
    equivalent noise-prediction model (the conversion is exact, so only rounding differs)."""
    from ea_dit.diffusion import noise_predictor

    x_T = _x_T()
    steps = 100 if name == "ddpm" else 20
    kwargs = {"noise": lambda x: torch.zeros_like(x)} if name in ("ddpm", "ddim") else {}
    ref = SAMPLERS[name](gaussian_oracle(schedule), x_T.clone(), schedule, steps, **kwargs)
    got = SAMPLERS[name](noise_predictor(gaussian_v_oracle(schedule), schedule, "v_prediction"), x_T.clone(),
                         schedule, steps, **kwargs)
    torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-9)
    assert float((got - x_T).abs().max()) > 0.1  # it did sample (ref's accuracy is tested above)
