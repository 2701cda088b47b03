"""Reconstruction quality metrics in plain PyTorch: PSNR and SSIM (Wang et al. 2004).

Both accept images ``(N, C, H, W)`` or videos ``(B, C, F, H, W)`` (scored per frame) and return one value
per image/frame, shape ``(N,)`` or ``(B, F)``. ``data_range`` is max - min of the signal: 2.0 for the
VAE's [-1, 1] tensors, 255 for uint8 frames.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _frames(x: torch.Tensor, y: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Tensor, tuple[int, ...]]:
    if x.shape != y.shape:
        raise ValueError(f"{name}: inputs must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.ndim == 4:
        return x.double(), y.double(), (x.shape[0],)
    if x.ndim == 5:
        b, c, f, h, w = x.shape
        flat = [t.double().transpose(1, 2).reshape(b * f, c, h, w) for t in (x, y)]
        return flat[0], flat[1], (b, f)
    raise ValueError(f"{name}: expected (N, C, H, W) images or (B, C, F, H, W) video, got {tuple(x.shape)}")


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB, ``10 log10(data_range^2 / MSE)``, per image or frame (float64).

    Identical inputs give ``inf``.
    """
    a, b, out_shape = _frames(x, y, "psnr")
    mse = (a - b).pow(2).flatten(1).mean(dim=1)
    return (10.0 * torch.log10(data_range**2 / mse)).reshape(out_shape)


def gaussian_window(size: int = 11, sigma: float = 1.5, dtype=torch.float64, device=None) -> torch.Tensor:
    """Normalised 1D Gaussian of ``size`` taps (the SSIM window is its outer product)."""
    coords = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-coords.pow(2) / (2 * sigma**2))
    return g / g.sum()


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 2.0, window_size: int = 11,
         sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """Structural similarity with an 11x11 Gaussian window (sigma 1.5), per image or frame (float64).

    Local statistics are computed over "valid" windows only (no padding), per channel, and the SSIM map
    is averaged over positions and channels. Images smaller than the window use a window of their size.
    """
    a, b, out_shape = _frames(x, y, "ssim")
    c = a.shape[1]
    size = min(window_size, a.shape[-2], a.shape[-1])
    g = gaussian_window(size, sigma, device=a.device)
    kernel = (g[:, None] * g[None, :]).expand(c, 1, size, size)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, kernel, groups=c)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a.pow(2)
    var_b = blur(b * b) - mu_b.pow(2)
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a.pow(2) + mu_b.pow(2) + c1) * (var_a + var_b + c2))
    return ssim_map.flatten(1).mean(dim=1).reshape(out_shape)
