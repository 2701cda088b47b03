"""fit_scaling_factor returns 1 / std of posterior samples, checked against a known distribution."""

import pytest
import torch

from ea_vae import SliceVAE, SliceVAEConfig
from ea_vae.scaling import fit_scaling_factor


def test_fit_scaling_factor_makes_latents_unit_variance():
    torch.manual_seed(0)
    vae = SliceVAE(SliceVAEConfig.tiny(block_out_channels=(8, 8), down_block_types=("SpatialDownBlock3D",) * 2,
                                       up_block_types=("SpatialUpBlock3D",) * 2)).eval()
    with torch.no_grad():  # give the latents a scale far from 1
        vae.encoder.conv_out.weight.mul_(7.0)
        vae.encoder.conv_out.bias.add_(0.5)
    videos = [torch.rand(2, 3, 1, 16, 16) * 2 - 1 for _ in range(3)]
    s = fit_scaling_factor(vae, videos, torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)  # the same draws, one generator over the videos in order
    with torch.no_grad():
        z = torch.cat([vae.encode(v).sample(g).flatten() for v in videos])
    assert s == pytest.approx(1 / z.double().std(unbiased=False).item(), rel=1e-6)
    assert s < 0.9  # the scaled-up latents need a factor below one
    with pytest.raises(ValueError, match="no videos"):
        fit_scaling_factor(vae, [])
