"""A fresh small VideoDiT must be able to learn from its caption.

The init of the timestep MLP, caption projection and adaLN-single is PixArt's N(0, 0.02) scaled by
sqrt(PixArt's fan-in / fan-in) (see VideoDiT.initialize_weights). With the plain 0.02, a 64-wide model with
32-channel captions starts with text features ~0.006 against a residual stream ~10 and, measured, still
ignored a caption that says where the object is after 3000 steps; the test below then fails.
"""

import math

import pytest
import torch

from ea_dit import VideoDiT, VideoDiTConfig
from ea_dit.diffusion import GaussianDiffusion


def test_init_std_keeps_pixart_output_scale():
    """std = 0.02 at PixArt's fan-ins (bit-compatible with PixArt's init there), scaled elsewhere."""
    torch.manual_seed(0)
    dit = VideoDiT(VideoDiTConfig(in_channels=4, sample_size=8, caption_channels=32, hidden_size=64, depth=1,
                                  num_heads=4, motion_module=False))
    t_emb = dit.adaln_single.timestep_embedder
    for layer, fan_in in ((t_emb.fc1, 256), (t_emb.fc2, 1152), (dit.adaln_single.linear, 1152),
                          (dit.caption_projection.fc1, 4096), (dit.caption_projection.fc2, 1152)):
        want = 0.02 * math.sqrt(fan_in / layer.in_features)
        got = layer.weight.std().item()
        n = layer.weight.numel()
        assert abs(got - want) < 5 * want / math.sqrt(2 * n), (layer, got, want)  # std of a sample std
    assert t_emb.fc1.weight.std().item() == pytest.approx(0.02, rel=0.05)  # fan-in 256 as in PixArt


def _batch(n: int, g: torch.Generator):
    """8x8 images: grey background, a 2x2 red square in columns 1-2 ('left', token 0) or 5-6 ('right',
    token 1) at a random row; captions are two one-hot tokens."""
    x = torch.full((n, 4, 1, 8, 8), -0.5)
    x[:, 3] = 0
    side = torch.randint(0, 2, (n,), generator=g)
    row = torch.randint(0, 7, (n,), generator=g)
    for i in range(n):
        col = 1 if side[i] == 0 else 5
        x[i, 0, :, row[i]:row[i] + 2, col:col + 2] = 0.8
    embeds = torch.zeros(n, 2, 32)
    embeds[torch.arange(n), 0, side] = 4.0
    embeds[:, 1, 10] = 4.0
    return x, embeds, torch.ones(n, 2, dtype=torch.bool), side


@pytest.mark.slow
def test_small_dit_learns_a_caption_that_places_the_object():
    """After 3000 steps the prediction at pure noise (t = 999, the mean the sampler starts from) puts the
    red square on the side the caption names: the closed-form answer is E[x0 | caption], red mass on
    columns 1-2 for 'left' and 5-6 for 'right' (0.5 above the background there; 0 on the other side)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(min(2, threads))
    try:
        torch.manual_seed(0)
        g = torch.Generator().manual_seed(0)
        dit = VideoDiT(VideoDiTConfig(in_channels=4, sample_size=8, caption_channels=32, hidden_size=64, depth=2,
                                      num_heads=4, motion_module=False, learn_sigma=False,
                                      prediction_type="v_prediction")).train()
        diffusion = GaussianDiffusion()
        opt = torch.optim.AdamW(dit.parameters(), lr=1e-3, weight_decay=0.0)
        for _ in range(3000):
            x0, embeds, mask, _ = _batch(32, g)
            t = torch.randint(0, 1000, (32,), generator=g)
            noise = torch.randn(x0.shape, generator=g)
            xt = diffusion.q_sample(x0, t, noise)
            loss = diffusion.training_losses(dit(xt, t, embeds, mask), x0, t, noise, xt, "v_prediction")["loss"]
            opt.zero_grad()
            loss.mean().backward()
            opt.step()
        dit.eval()
        x0, embeds, mask, side = _batch(64, g)
        t = torch.full((64,), 999)
        xt = diffusion.q_sample(x0, t, torch.randn(x0.shape, generator=g))
        with torch.no_grad():
            eps = diffusion.noise_prediction(dit(xt, t, embeds, mask), xt, t, "v_prediction")
        red = diffusion.predict_x0(xt, t, eps)[:, 0, 0].mean(1)  # (64, 8): red per column
    finally:
        torch.set_num_threads(threads)
    left_minus_right = red[:, 1:3].mean(1) - red[:, 5:7].mean(1)
    # exact answer: +0.33 for 'left', -0.33 for 'right' (1.3 * 2 rows / 8 rows averaged over columns)
    assert left_minus_right[side == 0].mean() > 0.15, left_minus_right[side == 0].mean()
    assert left_minus_right[side == 1].mean() < -0.15, left_minus_right[side == 1].mean()
