"""`DiagonalGaussian`: the KL-VAE posterior q(z | x) = N(mean, diag(exp(logvar)))."""

from __future__ import annotations

import math

import torch


class DiagonalGaussian:
    """A diagonal Gaussian over latents of any shape, e.g. `(B, C, 1 + k, H/8, W/8)`.

    `logvar` is clamped to [-30, 20] (as the released VAE does) so `std` neither underflows nor overflows.
    Reductions (`kl`, `nll`) sum over every dimension but the batch and return shape `(B,)`.
    """

    def __init__(self, mean: torch.Tensor, logvar: torch.Tensor):
        if mean.shape != logvar.shape:
            raise ValueError(f"DiagonalGaussian: mean {tuple(mean.shape)} and logvar {tuple(logvar.shape)} differ")
        self.mean = mean
        self.logvar = logvar.clamp(-30.0, 20.0)

    @classmethod
    def from_moments(cls, moments: torch.Tensor, dim: int = 1) -> DiagonalGaussian:
        """Split `moments` (mean and log-variance stacked along `dim`, e.g. `(B, 2C, T, h, w)`) in two."""
        if moments.shape[dim] % 2:
            raise ValueError(f"DiagonalGaussian: moments have {moments.shape[dim]} channels; need an even number")
        mean, logvar = moments.chunk(2, dim=dim)
        return cls(mean, logvar)

    @property
    def std(self) -> torch.Tensor:
        return torch.exp(0.5 * self.logvar)

    @property
    def var(self) -> torch.Tensor:
        return torch.exp(self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """A reparameterised draw `mean + std * eps`; `eps` comes from `generator` (on its own device)."""
        device = generator.device if generator is not None else self.mean.device
        eps = torch.randn(self.mean.shape, generator=generator, device=device, dtype=self.mean.dtype)
        return self.mean + self.std * eps.to(self.mean.device)

    def mode(self) -> torch.Tensor:
        return self.mean

    def _dims(self) -> list[int]:
        return list(range(1, self.mean.ndim))

    def kl(self, other: DiagonalGaussian | None = None) -> torch.Tensor:
        """KL(self || other), default other = N(0, I); shape `(B,)`."""
        if other is None:
            terms = self.mean.pow(2) + self.var - 1.0 - self.logvar
        else:
            terms = (self.mean - other.mean).pow(2) / other.var + self.var / other.var - 1.0 - self.logvar + other.logvar
        return 0.5 * terms.sum(dim=self._dims())

    def nll(self, sample: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood of `sample` under this Gaussian, in nats; shape `(B,)`."""
        terms = math.log(2.0 * math.pi) + self.logvar + (sample - self.mean).pow(2) / self.var
        return 0.5 * terms.sum(dim=self._dims())

    def __repr__(self) -> str:
        return f"DiagonalGaussian(shape={tuple(self.mean.shape)}, dtype={self.mean.dtype})"
