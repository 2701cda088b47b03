"""DiagonalGaussian against torch.distributions (closed-form KL, log-probabilities)."""

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from ea_vae import DiagonalGaussian


def gaussian(seed, shape=(2, 4, 3, 5, 6)):
    g = torch.Generator().manual_seed(seed)
    moments = torch.randn(shape[0], 2 * shape[1], *shape[2:], generator=g, dtype=torch.float64)
    return DiagonalGaussian.from_moments(moments), moments


def test_moments_split_and_mode():
    q, moments = gaussian(0)
    assert torch.equal(q.mean, moments[:, :4]) and torch.equal(q.logvar, moments[:, 4:])
    assert torch.equal(q.mode(), q.mean)
    torch.testing.assert_close(q.std, torch.exp(0.5 * moments[:, 4:]))
    torch.testing.assert_close(q.var, q.std**2)


def test_kl_to_standard_normal_closed_form():
    q, _ = gaussian(1)
    expected = kl_divergence(Normal(q.mean, q.std), Normal(0.0, 1.0)).sum(dim=(1, 2, 3, 4))
    torch.testing.assert_close(q.kl(), expected)
    assert q.kl().shape == (2,)


def test_kl_between_gaussians_closed_form():
    q, _ = gaussian(2)
    p, _ = gaussian(3)
    expected = kl_divergence(Normal(q.mean, q.std), Normal(p.mean, p.std)).sum(dim=(1, 2, 3, 4))
    torch.testing.assert_close(q.kl(p), expected)
    torch.testing.assert_close(q.kl(q), torch.zeros(2, dtype=torch.float64))


def test_nll_is_negative_log_prob():
    q, _ = gaussian(4)
    x = torch.randn_like(q.mean)
    torch.testing.assert_close(q.nll(x), -Normal(q.mean, q.std).log_prob(x).sum(dim=(1, 2, 3, 4)))


def test_sample_uses_generator_and_has_the_right_moments():
    mean = torch.full((1, 2, 200, 50), 3.0)
    logvar = torch.full_like(mean, 2 * torch.log(torch.tensor(0.5)))
    q = DiagonalGaussian(mean, logvar)
    a = q.sample(torch.Generator().manual_seed(0))
    b = q.sample(torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    assert abs(a.mean().item() - 3.0) < 0.01 and abs(a.std().item() - 0.5) < 0.01


def test_logvar_is_clamped_and_errors():
    q = DiagonalGaussian(torch.zeros(1, 2), torch.tensor([[-100.0, 100.0]]))
    assert q.logvar.tolist() == [[-30.0, 20.0]]
    with pytest.raises(ValueError, match="even number"):
        DiagonalGaussian.from_moments(torch.zeros(1, 3, 2))
    with pytest.raises(ValueError, match="differ"):
        DiagonalGaussian(torch.zeros(1, 2), torch.zeros(1, 3))
