"""IDDPM diffusion against closed forms: schedule, posterior, KL, likelihood, losses, CFG (samplers: test_samplers)."""

import math

import pytest
import torch

from ea_dit.diffusion import (
    GaussianDiffusion,
    classifier_free_guidance,
    discretized_gaussian_log_likelihood,
    normal_kl,
)


@pytest.fixture(scope="module")
def diffusion():
    return GaussianDiffusion()


def test_schedule_matches_linear_betas(diffusion):
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    torch.testing.assert_close(diffusion.betas, betas, rtol=0, atol=1e-12)
    torch.testing.assert_close(diffusion.alphas_cumprod[-1], torch.prod(1 - betas))


def test_q_sample_moments(diffusion):
    x0 = torch.full((20000, 1), 0.7, dtype=torch.float64)
    t = torch.full((20000,), 300)
    xt = diffusion.q_sample(x0, t, torch.randn(x0.shape, generator=torch.Generator().manual_seed(0), dtype=x0.dtype))
    abar = float(torch.prod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)[:301]))
    assert xt.mean().item() == pytest.approx(math.sqrt(abar) * 0.7, abs=0.02)
    assert xt.var().item() == pytest.approx(1 - abar, abs=0.02)


def test_posterior_is_bayes_rule(diffusion):
    # q(x_{t-1} | x_t, x0) ∝ N(x_{t-1}; sqrt(abar_{t-1}) x0, 1 - abar_{t-1}) * N(x_t; sqrt(alpha_t) x_{t-1}, beta_t)
    t = 37
    b = float(diffusion.betas[t])
    a_prev = float(diffusion.alphas_cumprod[t - 1])
    x0, xt = torch.tensor([[0.3]]), torch.tensor([[-1.2]])
    prec = 1 / (1 - a_prev) + (1 - b) / b
    mean = (math.sqrt(a_prev) * 0.3 / (1 - a_prev) + math.sqrt(1 - b) * -1.2 / b) / prec
    m, log_var = diffusion.q_posterior(x0, xt, torch.tensor([t]))
    assert m.item() == pytest.approx(mean, rel=1e-5)
    assert log_var.item() == pytest.approx(math.log(1 / prec), rel=1e-5)


def test_normal_kl_matches_torch_distributions():
    m1, m2 = torch.randn(5), torch.randn(5)
    lv1, lv2 = torch.randn(5), torch.randn(5)
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(m1, (0.5 * lv1).exp()),
                                            torch.distributions.Normal(m2, (0.5 * lv2).exp()))
    torch.testing.assert_close(normal_kl(m1, lv1, m2, lv2), ref)


def test_discretized_likelihood_sums_to_one():
    bins = torch.linspace(-1, 1, 256, dtype=torch.float64)
    for mean, log_scale in [(0.1, -2.0), (-0.6, -4.0), (0.9, 0.0)]:
        ll = discretized_gaussian_log_likelihood(bins, torch.tensor(mean, dtype=torch.float64),
                                                 torch.tensor(log_scale, dtype=torch.float64))
        assert ll.exp().sum().item() == pytest.approx(1.0, abs=1e-6)


def test_training_loss_zero_for_oracle(diffusion):
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(4, 2, 3, 4, 4, generator=g)
    noise = torch.randn(x0.shape, generator=g)
    t = torch.tensor([5, 100, 500, 999])
    xt = diffusion.q_sample(x0, t, noise)
    # v = -1 selects the (clipped) posterior variance: with the true noise the KL term vanishes.
    out = torch.cat([noise, -torch.ones_like(noise)], dim=1)
    losses = diffusion.training_losses(out, x0, t, noise, xt)
    assert losses["mse"].abs().max() < 1e-10
    assert losses["vb"].abs().max() < 1e-4
    bad = diffusion.training_losses(torch.cat([noise, torch.ones_like(noise)], 1), x0, t, noise, xt)
    # beta_t and the posterior variance differ most at small t; they converge as t grows.
    assert bad["vb"][0] > 1e-2 and (bad["vb"][:3] > losses["vb"][:3]).all()


def test_vb_does_not_train_the_mean(diffusion):
    x0, noise = torch.randn(2, 2, 1, 2, 2), torch.randn(2, 2, 1, 2, 2)
    t = torch.tensor([10, 400])
    out = torch.randn(2, 4, 1, 2, 2, requires_grad=True)
    diffusion.training_losses(out, x0, t, noise, diffusion.q_sample(x0, t, noise))["vb"].sum().backward()
    assert out.grad[:, :2].abs().max() == 0 and out.grad[:, 2:].abs().max() > 0


def test_classifier_free_guidance():
    def model(x, t, emb):
        return torch.cat([x * emb, torch.zeros_like(x)], 1)

    x, t = torch.randn(2, 3, 1, 2, 2), torch.tensor([1, 2])
    cond = {"emb": torch.full((2, 1, 1, 1, 1), 3.0)}
    uncond = {"emb": torch.full((2, 1, 1, 1, 1), 1.0)}
    for scale, factor in [(0.0, 1.0), (1.0, 3.0), (4.5, 1 + 4.5 * 2)]:
        out = classifier_free_guidance(model, scale, cond, uncond)(x, t)
        torch.testing.assert_close(out[:, :3], x * factor)


def test_learned_sigma_is_read_from_the_output_channels(diffusion):
    with pytest.raises(ValueError, match="expected 2 .noise. or 4"):
        diffusion.p_mean_variance(torch.zeros(1, 3, 1, 1, 1), torch.zeros(1, 2, 1, 1, 1), torch.tensor([3]))
    # C output channels: the fixed posterior variance, and the loss is the noise MSE alone.
    _, log_var, _ = diffusion.p_mean_variance(torch.zeros(1, 2, 1), torch.zeros(1, 2, 1), torch.tensor([3]))
    torch.testing.assert_close(log_var, diffusion.posterior_log_variance_clipped[3].float().expand(1, 2, 1))
    assert GaussianDiffusion().training_losses(
        torch.zeros(1, 2, 1), torch.zeros(1, 2, 1), torch.tensor([3]), torch.zeros(1, 2, 1),
        torch.zeros(1, 2, 1))["loss"].item() == 0


def test_v_prediction_target_and_conversion_match_the_closed_form():
    """v = alpha eps - sigma x0 (alpha^2 = abar): the loss is zero for the exact v, and the conversion back
    gives the noise exactly; the variational-bound term equals the noise model's (same mean, same variance)."""
    from ea_dit.diffusion import GaussianDiffusion

    d = GaussianDiffusion()
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(6, 2, 3, 4, 4, generator=g, dtype=torch.float64).clamp(-1, 1)
    noise = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 1, 250, 500, 900, 999])
    abar = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64).neg().add(1).cumprod(0)[t].view(-1, 1, 1, 1, 1)
    xt = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
    v = abar.sqrt() * noise - (1 - abar).sqrt() * x0
    var = torch.full_like(x0, 0.3)
    out_v = torch.cat([v, var], 1)
    losses_v = d.training_losses(out_v, x0, t, noise, xt, prediction_type="v_prediction")
    assert float(losses_v["mse"].abs().max()) < 1e-20
    converted = d.noise_prediction(out_v, xt, t, "v_prediction")
    torch.testing.assert_close(converted[:, :2], noise, rtol=0, atol=1e-10)
    torch.testing.assert_close(converted[:, 2:], var)
    losses_eps = d.training_losses(torch.cat([noise, var], 1), x0, t, noise, xt)
    torch.testing.assert_close(losses_v["vb"], losses_eps["vb"], rtol=1e-8, atol=1e-10)
    # a wrong v is penalised by its own squared error, not the noise's
    losses_off = d.training_losses(torch.cat([v + 0.5, var], 1), x0, t, noise, xt, prediction_type="v_prediction")
    torch.testing.assert_close(losses_off["mse"], torch.full((6,), 0.25))  # the loss is float32
    with pytest.raises(ValueError, match="prediction_type"):
        d.training_losses(out_v, x0, t, noise, xt, prediction_type="sample")


def test_dit_config_checks_prediction_type():
    from ea_dit import VideoDiTConfig

    assert VideoDiTConfig().prediction_type == "epsilon"
    assert VideoDiTConfig(prediction_type="v_prediction").prediction_type == "v_prediction"
    with pytest.raises(ValueError, match="prediction_type"):
        VideoDiTConfig(prediction_type="x0")
