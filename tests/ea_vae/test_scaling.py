"""fit_scaling_factor (1 / std of posterior samples) and object_weights, against known answers."""

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


def test_object_weights_mark_pixels_unlike_the_frame_median():
    from ea_vae.losses import object_weights

    x = torch.full((2, 3, 4, 8, 8), -0.5)
    x[0, :, 1, 2:4, 5:7] = 0.8  # a 2x2 object in frame 1 of video 0
    x[1, 0, 3, 0, 0] = -0.4  # a small colour change below the threshold
    w = object_weights(x, 9.0)
    assert w.shape == (8, 1, 8, 8)
    expected = torch.ones(8, 1, 8, 8)
    expected[1, 0, 2:4, 5:7] = 10.0  # (video 0, frame 1) is row 1 of the (b f) layout
    assert torch.equal(w, expected)
