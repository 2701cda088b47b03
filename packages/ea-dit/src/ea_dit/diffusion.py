"""Gaussian diffusion as PixArt-alpha trains and samples it: IDDPM with a learned-range variance.

The model predicts noise and, in its second half of channels, a value `v` in [-1, 1] that interpolates
the log-variance between the posterior variance and beta_t (Nichol & Dhariwal, 2021). Training loss =
MSE on the noise + the variational bound term with the predicted mean frozen. The samplers that run on
this schedule are functions in `ea_dit.samplers`; `classifier_free_guidance` wraps a text-conditioned
model into the denoiser they take.

What the model's first C channels predict is its `prediction_type` (`VideoDiTConfig.prediction_type`):
"epsilon" (the noise, PixArt-alpha's choice) or "v_prediction" (`v = alpha_t eps - sigma_t x0`, Salimans &
Ho, 2022). With v the clean-sample estimate `x0 = alpha_t x_t - sigma_t v` stays bounded at high noise,
where the epsilon form divides the model's error by `alpha_t` (0.006 at t = 999 of the linear schedule):
small models trained briefly get their coarse layout, decided at high noise, much better. Training
targets the chosen quantity; the samplers always see noise predictions (`noise_prediction`).

All tensors are latents `(B, C, F, H, W)` (any trailing shape works); `t` is an int64 `(B,)` in [0, T).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

#: A model as the sampler sees it: (x_t, t) -> (B, 2C, ...) noise prediction and variance value.
Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class DiffusionConfig:
    """Noise schedule. Defaults = PixArt-alpha: 1000 steps, linear betas 1e-4 .. 0.02.

    Whether the variance is learned is the model's choice (`VideoDiTConfig.learn_sigma`): the diffusion
    reads it from the model output's channels (2C: noise + variance value; C: noise only).
    """

    num_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02


class GaussianDiffusion:
    """Schedule tensors (float64 on the CPU, gathered per batch) and the losses and samplers on them."""

    def __init__(self, config: DiffusionConfig | None = None, alphas_cumprod: torch.Tensor | None = None):
        self.config = c = config or DiffusionConfig()
        if alphas_cumprod is None:
            betas = torch.linspace(c.beta_start, c.beta_end, c.num_timesteps, dtype=torch.float64)
            alphas_cumprod = torch.cumprod(1.0 - betas, 0)
        abar = alphas_cumprod.to(torch.float64)
        prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
        betas = 1.0 - abar / prev
        self.betas, self.alphas_cumprod, self.alphas_cumprod_prev = betas, abar, prev
        self.posterior_variance = betas * (1 - prev) / (1 - abar)
        # The posterior variance is 0 at t = 0: clip its log to the value at t = 1.
        self.posterior_log_variance_clipped = torch.log(
            torch.cat([self.posterior_variance[1:2], self.posterior_variance[1:]]))
        self.posterior_mean_coef1 = betas * prev.sqrt() / (1 - abar)
        self.posterior_mean_coef2 = (1 - prev) * (1 - betas).sqrt() / (1 - abar)
        self.timestep_map = torch.arange(len(abar))

    @property
    def num_timesteps(self) -> int:
        return self.config.num_timesteps

    @staticmethod
    def _gather(values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        out = values.to(t.device)[t].to(like.dtype)
        return out.view(-1, *([1] * (like.ndim - 1)))

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Sample x_t ~ q(x_t | x_0) = N(sqrt(abar_t) x0, (1 - abar_t) I)."""
        a = self._gather(self.alphas_cumprod, t, x0)
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    def q_posterior(self, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor):
        """Mean and log-variance of q(x_{t-1} | x_t, x_0)."""
        mean = self._gather(self.posterior_mean_coef1, t, xt) * x0 + \
            self._gather(self.posterior_mean_coef2, t, xt) * xt
        return mean, self._gather(self.posterior_log_variance_clipped, t, xt)

    def predict_x0(self, xt: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        a = self._gather(self.alphas_cumprod, t, xt)
        return (xt - (1 - a).sqrt() * eps) / a.sqrt()

    def p_mean_variance(self, output: torch.Tensor, xt: torch.Tensor, t: torch.Tensor,
                        clip_x0: float | None = None):
        """Mean, log-variance and predicted x0 of p(x_{t-1} | x_t) from a model output (B, 2C, ...)."""
        c = xt.shape[1]
        if _learned_sigma(output, c):
            eps, v = output[:, :c], output[:, c:]
            min_log = self._gather(self.posterior_log_variance_clipped, t, xt)
            max_log = self._gather(torch.log(self.betas), t, xt)
            frac = (v + 1) / 2
            log_var = frac * max_log + (1 - frac) * min_log
        else:
            eps = output[:, :c]
            log_var = self._gather(self.posterior_log_variance_clipped, t, xt).expand_as(xt)
        x0 = self.predict_x0(xt, t, eps)
        if clip_x0 is not None:
            x0 = x0.clamp(-clip_x0, clip_x0)
        mean, _ = self.q_posterior(x0, xt, t)
        return mean, log_var, x0

    def velocity(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The v-prediction target `alpha_t noise - sigma_t x0` (alpha_t^2 = abar_t, sigma_t^2 = 1 - abar_t)."""
        a = self._gather(self.alphas_cumprod, t, x0)
        return a.sqrt() * noise - (1 - a).sqrt() * x0

    def noise_prediction(self, output: torch.Tensor, xt: torch.Tensor, t: torch.Tensor,
                         prediction_type: str = "epsilon") -> torch.Tensor:
        """A model output (B, C or 2C, ...) with its first C channels as a noise prediction.

        "epsilon": unchanged; "v_prediction": `eps = sigma_t x_t + alpha_t v`. Variance channels pass through.
        """
        check_prediction_type(prediction_type)
        if prediction_type == "epsilon":
            return output
        c = xt.shape[1]
        _learned_sigma(output, c)
        a = self._gather(self.alphas_cumprod, t, xt)
        eps = (1 - a).sqrt() * xt + a.sqrt() * output[:, :c].to(xt.dtype)
        return torch.cat([eps.to(output.dtype), output[:, c:]], dim=1)

    def training_losses(self, output: torch.Tensor, x0: torch.Tensor, t: torch.Tensor,
                        noise: torch.Tensor, xt: torch.Tensor, prediction_type: str = "epsilon"
                        ) -> dict[str, torch.Tensor]:
        """IDDPM hybrid loss per sample: `mse` (on the noise, or on v for "v_prediction") + `vb` (variance,
        mean frozen); `loss` = their sum.

        `output` is the model's prediction for `xt = q_sample(x0, t, noise)`; all returned tensors are (B,).
        """
        check_prediction_type(prediction_type)
        c = x0.shape[1]
        target = noise if prediction_type == "epsilon" else self.velocity(x0, t, noise)
        mse = (output[:, :c] - target).float().pow(2).flatten(1).mean(1)
        if not _learned_sigma(output, c):
            return {"loss": mse, "mse": mse}
        output = self.noise_prediction(output, xt, t, prediction_type)
        frozen = torch.cat([output[:, :c].detach(), output[:, c:]], dim=1)
        mean, log_var, _ = self.p_mean_variance(frozen, xt, t)
        true_mean, true_log_var = self.q_posterior(x0, xt, t)
        kl = normal_kl(true_mean, true_log_var, mean, log_var).flatten(1).mean(1) / math.log(2.0)
        nll = -discretized_gaussian_log_likelihood(x0, mean, 0.5 * log_var).flatten(1).mean(1) / math.log(2.0)
        vb = torch.where(t == 0, nll, kl) * (self.num_timesteps / 1000.0)
        return {"loss": mse + vb, "mse": mse, "vb": vb}

    def respace(self, timesteps: list[int]) -> GaussianDiffusion:
        """The same process on a subsequence of its timesteps (betas recomputed from abar; IDDPM respacing).

        The result's `timestep_map[i]` is the original timestep of its step i.
        """
        sub = GaussianDiffusion(DiffusionConfig(len(timesteps)), alphas_cumprod=self.alphas_cumprod[timesteps])
        sub.timestep_map = torch.tensor(timesteps)
        return sub


def classifier_free_guidance(model: Callable[..., torch.Tensor], scale: float, cond: dict, uncond: dict
                             ) -> Denoiser:
    """Wrap `model(x, t, **kwargs)` into a denoiser applying CFG on the noise half of its output.

    `cond` / `uncond` are keyword arguments (e.g. text_embeds, text_mask) for the two branches; both run
    in one batch.
    """

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        kwargs = {k: torch.cat([cond[k], uncond[k]]) for k in cond}
        out = model(torch.cat([x, x]), torch.cat([t, t]), **kwargs)
        out_c, out_u = out.chunk(2)
        c = x.shape[1]
        eps = out_u[:, :c] + scale * (out_c[:, :c] - out_u[:, :c])
        return torch.cat([eps, out_c[:, c:]], dim=1)

    return denoise


PREDICTION_TYPES = ("epsilon", "v_prediction")


def check_prediction_type(prediction_type: str) -> None:
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type {prediction_type!r} is unknown; choose one of {', '.join(PREDICTION_TYPES)}")


def noise_predictor(model: Callable[..., torch.Tensor], schedule: GaussianDiffusion,
                    prediction_type: str = "epsilon") -> Callable[..., torch.Tensor]:
    """Wrap `model(x, t, **kwargs)` so that it returns noise predictions whatever it was trained to predict
    (see `GaussianDiffusion.noise_prediction`); the model itself when it predicts noise."""
    check_prediction_type(prediction_type)
    if prediction_type == "epsilon":
        return model

    def predict(x: torch.Tensor, t: torch.Tensor, **kwargs) -> torch.Tensor:
        return schedule.noise_prediction(model(x, t, **kwargs), x, t, prediction_type)

    return predict


def _learned_sigma(output: torch.Tensor, channels: int) -> bool:
    if output.shape[1] not in (channels, 2 * channels):
        raise ValueError(f"the model output has {output.shape[1]} channels; expected {channels} (noise) or "
                         f"{2 * channels} (noise and learned variance) for {channels} latent channels")
    return output.shape[1] == 2 * channels


def normal_kl(mean1, logvar1, mean2, logvar2) -> torch.Tensor:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)), elementwise, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2)
                  + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def _approx_standard_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def discretized_gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor
                                        ) -> torch.Tensor:
    """Log-likelihood of data in [-1, 1] quantised to 256 bins under N(mean, e^(2 log_scale)), elementwise."""
    centered = x - mean
    inv_std = torch.exp(-log_scale)
    cdf_plus = _approx_standard_normal_cdf(inv_std * (centered + 1.0 / 255.0))
    cdf_min = _approx_standard_normal_cdf(inv_std * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))


def spaced_timesteps(num_timesteps: int, steps: int) -> list[int]:
    """`steps` evenly spaced timesteps over [0, num_timesteps), ascending, first 0 and last T - 1."""
    if not 1 <= steps <= num_timesteps:
        raise ValueError(f"steps must be in [1, {num_timesteps}], got {steps}")
    return sorted({round(i * (num_timesteps - 1) / max(steps - 1, 1)) for i in range(steps)})
