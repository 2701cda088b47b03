"""PSNR / SSIM against closed forms and a per-window loop reference."""

import math

import pytest
import torch

from ea_vae.metrics import gaussian_window, psnr, ssim


def test_psnr_closed_form():
    x = torch.zeros(2, 3, 8, 8)
    y = x + 0.1  # MSE = 0.01 -> PSNR = 10 log10(4 / 0.01) for data range 2
    torch.testing.assert_close(psnr(x, y), torch.full((2,), 10 * math.log10(4 / 0.01), dtype=torch.float64))
    assert psnr(x, y, data_range=1.0)[0].item() == pytest.approx(20.0)
    assert psnr(x, x)[0].item() == math.inf


def test_psnr_video_is_per_frame():
    x = torch.zeros(1, 3, 2, 4, 4)
    y = x.clone()
    y[:, :, 1] = 0.2  # only frame 1 differs
    out = psnr(x, y)
    assert out.shape == (1, 2)
    assert out[0, 0].item() == math.inf and out[0, 1].item() == pytest.approx(10 * math.log10(4 / 0.04))


def test_ssim_identical_is_one_and_constant_images_closed_form():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 24, 24, generator=g) * 2 - 1
    torch.testing.assert_close(ssim(x, x), torch.ones(2, dtype=torch.float64))
    a, b = 0.25, -0.5  # exact in float32
    c1 = (0.01 * 2) ** 2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)  # zero variance: contrast-structure term is 1
    got = ssim(torch.full((1, 1, 16, 16), a), torch.full((1, 1, 16, 16), b))
    assert got.item() == pytest.approx(expected, rel=1e-9)


def _ssim_loop(x, y, data_range=2.0, size=11, sigma=1.5):
    """Textbook SSIM: for every valid window position, weighted means/variances/covariance by explicit sums."""
    x, y = x.double(), y.double()
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-coords**2 / (2 * sigma**2))
    w = torch.outer(g, g)
    w = w / w.sum()
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    values = []
    for ch in range(x.shape[0]):
        for i in range(x.shape[1] - size + 1):
            for j in range(x.shape[2] - size + 1):
                px, py = x[ch, i:i + size, j:j + size], y[ch, i:i + size, j:j + size]
                mx, my = (w * px).sum(), (w * py).sum()
                vx, vy = (w * (px - mx) ** 2).sum(), (w * (py - my) ** 2).sum()
                cov = (w * (px - mx) * (py - my)).sum()
                values.append(((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
    return torch.stack(values).mean()


def test_ssim_matches_per_window_loop():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, 14, 15, generator=g) * 2 - 1
    y = (x + 0.3 * torch.randn(2, 14, 15, generator=g)).clamp(-1, 1)
    got = ssim(x[None], y[None])
    assert got.item() == pytest.approx(_ssim_loop(x, y).item(), rel=1e-9)
    assert 0 < got.item() < 1


def test_ssim_video_shape_and_errors():
    x = torch.rand(2, 3, 5, 16, 16)
    assert ssim(x, x.flip(-1)).shape == (2, 5)
    with pytest.raises(ValueError, match="same shape"):
        ssim(x, x[:, :, :3])
    assert gaussian_window(11).sum().item() == pytest.approx(1.0)
