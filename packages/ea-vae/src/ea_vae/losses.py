"""Training losses for a video VAE, after EasyAnimate's ``contperceptual.py`` (LPIPS + discriminator).

Generator objective (one step of the VAE optimiser)::

    rec   = |x - x_hat|_1 * l1_weight + perceptual_weight * LPIPS(x_f, x_hat_f)   per pixel, per frame f
    nll   = rec / exp(logvar) + logvar                       (logvar: one learned scalar)
    loss  = sum(nll) / (B * F) + kl_weight * sum(KL) / B + d_weight * disc_factor * g_loss

with ``g_loss = -mean(D2d(frames)) - mean(D3d(video))`` and the adaptive weight
``d_weight = disc_weight * |grad_W nll| / (|grad_W g_loss| + 1e-4)`` at the decoder's last layer ``W``.
``disc_factor`` is 0 before ``disc_start`` (the GAN term is off for the first 50k steps by default).

Discriminator objective (its own optimiser): hinge (or vanilla) loss of both discriminators on real
videos and on detached reconstructions.

Typical use::

    loss_fn = VAELoss(VAELossConfig(perceptual_weights=("vgg16.pth", "lpips_vgg.pth")))
    opt_g = Adam([*vae.parameters(), *loss_fn.generator_parameters()], lr=1e-4, betas=(0.5, 0.9))
    opt_d = Adam(loss_fn.discriminator_parameters(), lr=1e-4, betas=(0.5, 0.9))
    posterior = vae.encode(x); x_hat = vae.decode(posterior.sample())
    g, log = loss_fn.generator_loss(x, x_hat, posterior, step, last_decoder_weight(vae))
    opt_g.zero_grad(); g.backward(); opt_g.step()
    d, log = loss_fn.discriminator_loss(x, x_hat, step)
    opt_d.zero_grad(); d.backward(); opt_d.step()
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .discriminator import Discriminator3D, NLayerDiscriminator
from .perceptual import LPIPS, load_lpips_weights


@dataclass
class VAELossConfig:
    """Weights of the VAE training objective; defaults follow the EasyAnimate VAE training configs.

    ``perceptual_weights``: local file(s) with the LPIPS VGG16 trunk and linear heads (see
    :mod:`ea_vae.perceptual`). ``None`` leaves the perceptual network randomly initialised, which is only
    useful in tests (a warning says so when ``perceptual_weight > 0``).
    """

    disc_start: int = 50001  # global step at which the GAN terms switch on
    kl_weight: float = 1e-6
    l1_weight: float = 1.0
    perceptual_weight: float = 1.0
    logvar_init: float = 0.0
    disc_weight: float = 0.5  # scale of the adaptive weight
    disc_factor: float = 1.0  # GAN weight once the discriminators are on
    disc_loss: str = "hinge"  # or "vanilla" (softplus)
    disc_2d: bool = True  # per-frame NLayer PatchGAN
    disc_2d_channels: int = 64
    disc_2d_layers: int = 3
    disc_3d: bool = True  # space-time patch discriminator
    disc_3d_channels: tuple[int, ...] = (64, 128, 256)
    disc_norm_groups: int = 32
    in_channels: int = 3
    perceptual_weights: str | tuple[str, ...] | None = None

    def __post_init__(self):
        if self.disc_loss not in ("hinge", "vanilla"):
            raise ValueError(f"disc_loss must be 'hinge' or 'vanilla', got {self.disc_loss!r}")
        if isinstance(self.perceptual_weights, list):
            self.perceptual_weights = tuple(self.perceptual_weights)
        self.disc_3d_channels = tuple(self.disc_3d_channels)


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """Hinge discriminator loss ``0.5 * (mean(relu(1 - real)) + mean(relu(1 + fake)))``; a scalar."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def vanilla_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """Non-saturating GAN discriminator loss ``0.5 * (mean(softplus(-real)) + mean(softplus(fake)))``."""
    return 0.5 * (F.softplus(-logits_real).mean() + F.softplus(logits_fake).mean())


def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, 1)) summed over all but the batch axis: ``(B, ...)`` -> ``(B,)``."""
    kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar)
    return kl.flatten(1).sum(dim=1)


def adopt_weight(weight: float, global_step: int, threshold: int) -> float:
    """``weight`` from step ``threshold`` on, 0 before (switches the GAN terms on late in training)."""
    return weight if global_step >= threshold else 0.0


def adaptive_weight(nll_loss: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor,
                    scale: float = 0.5) -> torch.Tensor:
    """Balance GAN against reconstruction: ``scale * |d nll / dW| / (|d g_loss / dW| + 1e-4)``.

    ``W`` (``last_layer``) is the decoder's output-layer weight. The result is detached and clamped to
    [0, 1e4] before scaling. Both losses keep their graphs (``retain_graph=True``).
    """
    nll_grad = torch.autograd.grad(nll_loss, last_layer, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    weight = nll_grad.norm() / (g_grad.norm() + 1e-4)
    return weight.clamp(0.0, 1e4).detach() * scale


def last_decoder_weight(vae: nn.Module) -> torch.Tensor:
    """The weight of the last layer of ``vae.decoder`` that has one (its output conv), for the adaptive weight."""
    decoder = getattr(vae, "decoder", None)
    if not isinstance(decoder, nn.Module):
        raise ValueError(f"{type(vae).__name__} has no `decoder` module; pass the last layer's weight yourself")
    weights = [p for name, p in decoder.named_parameters() if name.endswith("weight") and p.ndim >= 2]
    if not weights:
        raise ValueError(f"{type(vae).__name__}.decoder has no weight tensors")
    return weights[-1]


def _posterior_stats(posterior: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(posterior, tuple | list) and len(posterior) == 2:
        return posterior[0], posterior[1]
    if hasattr(posterior, "mean") and hasattr(posterior, "logvar"):
        return posterior.mean, posterior.logvar
    raise TypeError("posterior must have .mean and .logvar (e.g. a DiagonalGaussian) or be (mean, logvar)")


@contextmanager
def _frozen(module: nn.Module) -> Iterator[None]:
    """Temporarily stop gradients into ``module``'s parameters (they still flow to its inputs)."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def _as_video(x: torch.Tensor, name: str) -> torch.Tensor:
    if x.ndim == 4:  # images (B, C, H, W) count as one-frame videos
        x = x.unsqueeze(2)
    if x.ndim != 5:
        raise ValueError(f"{name} must be (B, C, F, H, W) video or (B, C, H, W) images, got {tuple(x.shape)}")
    return x


class VAELoss(nn.Module):
    """L1 + LPIPS reconstruction with learned log-variance, KL, and hinge GAN with adaptive weight.

    Owns the learned ``logvar`` (optimise it with the VAE: :meth:`generator_parameters`), the frozen
    LPIPS network and the discriminators (their own optimiser: :meth:`discriminator_parameters`).
    """

    def __init__(self, config: VAELossConfig | None = None):
        super().__init__()
        self.config = config = config or VAELossConfig()
        self.logvar = nn.Parameter(torch.tensor(float(config.logvar_init)))
        self.perceptual = LPIPS() if config.perceptual_weight > 0 else None
        if self.perceptual is not None:
            paths = config.perceptual_weights
            if paths:
                load_lpips_weights(self.perceptual, *((paths,) if isinstance(paths, str) else paths))
            else:
                warnings.warn("VAELoss: no perceptual_weights given; LPIPS uses random VGG16 weights",
                              stacklevel=2)
        self.disc_2d = (NLayerDiscriminator(config.in_channels, config.disc_2d_channels, config.disc_2d_layers)
                        if config.disc_2d else None)
        self.disc_3d = (Discriminator3D(config.in_channels, config.disc_3d_channels, config.disc_norm_groups)
                        if config.disc_3d else None)
        self._d_loss = hinge_d_loss if config.disc_loss == "hinge" else vanilla_d_loss

    def generator_parameters(self) -> list[nn.Parameter]:
        """Parameters trained with the VAE: the learned log-variance."""
        return [self.logvar]

    def discriminator_parameters(self) -> list[nn.Parameter]:
        """Parameters of both discriminators (their own optimiser)."""
        return [p for d in (self.disc_2d, self.disc_3d) if d is not None for p in d.parameters()]

    def _discriminators(self) -> nn.ModuleList:
        return nn.ModuleList(d for d in (self.disc_2d, self.disc_3d) if d is not None)

    def reconstruction_loss(self, inputs: torch.Tensor, reconstructions: torch.Tensor) -> torch.Tensor:
        """Per-pixel L1 plus per-frame LPIPS: ``(B, C, F, H, W)`` x2 -> ``(B*F, C, H, W)``."""
        x = rearrange(inputs, "b c f h w -> (b f) c h w")
        y = rearrange(reconstructions, "b c f h w -> (b f) c h w")
        rec = (x - y).abs() * self.config.l1_weight
        if self.perceptual is not None:
            rec = rec + self.config.perceptual_weight * self.perceptual(x, y)
        return rec

    def _g_logits(self, reconstructions: torch.Tensor) -> torch.Tensor:
        g_loss = reconstructions.new_zeros(())
        if self.disc_2d is not None:
            frames = rearrange(reconstructions, "b c f h w -> (b f) c h w")
            g_loss = g_loss - self.disc_2d(frames).mean()
        if self.disc_3d is not None:
            g_loss = g_loss - self.disc_3d(reconstructions).mean()
        return g_loss

    def generator_loss(self, inputs: torch.Tensor, reconstructions: torch.Tensor, posterior: Any,
                       global_step: int, last_layer: torch.Tensor | None = None,
                       weights: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss for the VAE's optimiser step.

        Args:
            inputs, reconstructions: ``(B, C, F, H, W)`` in [-1, 1] (``(B, C, H, W)`` images also accepted).
            posterior: the encoder's ``DiagonalGaussian`` (anything with ``.mean``/``.logvar``, latents
                ``(B, C', F', H', W')``) or a ``(mean, logvar)`` pair.
            global_step: training step; the GAN term is off before ``config.disc_start``.
            last_layer: decoder output weight for the adaptive weight (see :func:`last_decoder_weight`);
                required once the GAN term is on.
            weights: optional per-pixel weights broadcastable to ``(B*F, C, H, W)``.

        Returns ``(loss, log)``, ``log`` holding detached scalars. Discriminator parameters receive no
        gradient from this loss.
        """
        cfg = self.config
        inputs = _as_video(inputs, "inputs")
        reconstructions = _as_video(reconstructions, "reconstructions")
        if inputs.shape != reconstructions.shape:
            raise ValueError(f"inputs {tuple(inputs.shape)} and reconstructions {tuple(reconstructions.shape)} "
                             "must have the same shape")
        rec = self.reconstruction_loss(inputs, reconstructions)
        nll = rec / self.logvar.exp() + self.logvar
        n = nll.shape[0]  # B * F: the reference averages over frames as well as the batch
        weighted_nll = (nll * weights).sum() / n if weights is not None else nll.sum() / n
        nll_loss = nll.sum() / n
        mean, logvar = _posterior_stats(posterior)
        kl_loss = kl_divergence(mean, logvar).sum() / mean.shape[0]
        loss = weighted_nll + cfg.kl_weight * kl_loss

        disc_factor = adopt_weight(cfg.disc_factor, global_step, cfg.disc_start)
        d_weight = torch.zeros((), device=loss.device)
        g_loss = torch.zeros((), device=loss.device)
        if disc_factor > 0 and len(self._discriminators()) > 0:
            with _frozen(self._discriminators()):
                g_loss = self._g_logits(reconstructions)
            if last_layer is None:
                raise ValueError("generator_loss needs last_layer (the decoder's output weight) once the "
                                 f"discriminator is on (step {global_step} >= disc_start {cfg.disc_start})")
            if self.training and torch.is_grad_enabled():
                d_weight = adaptive_weight(nll_loss, g_loss, last_layer, cfg.disc_weight)
            loss = loss + d_weight * disc_factor * g_loss
        log = {
            "total_loss": loss.detach(), "logvar": self.logvar.detach(), "kl_loss": kl_loss.detach(),
            "nll_loss": nll_loss.detach(), "rec_loss": rec.detach().mean(), "d_weight": d_weight.detach(),
            "disc_factor": torch.tensor(disc_factor), "g_loss": g_loss.detach(),
        }
        return loss, log

    def discriminator_loss(self, inputs: torch.Tensor, reconstructions: torch.Tensor,
                           global_step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss for the discriminators' optimiser step: hinge on real inputs vs detached reconstructions.

        Both tensors are detached, so no gradient reaches the VAE. Returns ``(loss, log)``. Before
        ``config.disc_start`` the loss is multiplied by 0 (it still has a graph, so ``backward`` works).
        """
        inputs = _as_video(inputs, "inputs").detach()
        fake = _as_video(reconstructions, "reconstructions").detach()
        disc_factor = adopt_weight(self.config.disc_factor, global_step, self.config.disc_start)
        d_loss = inputs.new_zeros(())
        log: dict[str, torch.Tensor] = {}
        if self.disc_2d is not None:
            real_2d = self.disc_2d(rearrange(inputs, "b c f h w -> (b f) c h w"))
            fake_2d = self.disc_2d(rearrange(fake, "b c f h w -> (b f) c h w"))
            d_loss = d_loss + self._d_loss(real_2d, fake_2d)
            log |= {"logits_real": real_2d.detach().mean(), "logits_fake": fake_2d.detach().mean()}
        if self.disc_3d is not None:
            real_3d, fake_3d = self.disc_3d(inputs), self.disc_3d(fake)
            d_loss = d_loss + self._d_loss(real_3d, fake_3d)
            log |= {"logits_real_3d": real_3d.detach().mean(), "logits_fake_3d": fake_3d.detach().mean()}
        d_loss = disc_factor * d_loss
        log["disc_loss"] = d_loss.detach()
        return d_loss, log


def object_weights(video: torch.Tensor, weight: float, threshold: float = 0.15) -> torch.Tensor:
    """Per-pixel loss weights `(B*F, 1, H, W)` for `VAELoss.generator_loss(weights=...)`: 1 + `weight` on
    pixels whose colour differs from their frame's median colour by more than `threshold` (in [-1, 1]
    units, largest channel difference), else 1.

    Small objects over a plain background (the demo world) are a few percent of the pixels: an
    unweighted loss is minimised first by the background, and an early VAE paints the object over.
    `video`: `(B, C, F, H, W)` (or `(B, C, H, W)` images).
    """
    x = _as_video(video, "video")
    frames = rearrange(x, "b c f h w -> (b f) c h w")
    median = frames.flatten(2).median(dim=2).values[..., None, None]  # (B*F, C, 1, 1)
    mask = (frames - median).abs().amax(dim=1, keepdim=True) > threshold
    return 1.0 + weight * mask.to(frames.dtype)
