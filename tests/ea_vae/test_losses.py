"""VAE training losses: closed-form values, adaptive weight by hand, LPIPS, discriminators, step separation."""

import math

import pytest
import torch
from torch import nn

from ea_vae.discriminator import Discriminator3D, NLayerDiscriminator, blur_pool3d
from ea_vae.losses import (
    VAELoss,
    VAELossConfig,
    adaptive_weight,
    adopt_weight,
    hinge_d_loss,
    kl_divergence,
    last_decoder_weight,
    vanilla_d_loss,
)
from ea_vae.perceptual import LPIPS, load_lpips_weights

pytestmark = pytest.mark.filterwarnings("ignore:VAELoss. no perceptual_weights")


def tiny_loss_config(**kw) -> VAELossConfig:
    base = dict(disc_2d_channels=8, disc_2d_layers=2, disc_3d_channels=(8, 16), disc_norm_groups=4)
    return VAELossConfig(**(base | kw))


# ---------------------------------------------------------------- closed-form pieces


def test_hinge_loss_closed_form():
    real = torch.tensor([2.0, 0.5, -1.0, 0.0])  # relu(1 - r) = 0, 0.5, 2, 1 -> mean 0.875
    fake = torch.tensor([-2.0, 0.0, 1.0])  # relu(1 + f) = 0, 1, 2 -> mean 1
    assert hinge_d_loss(real, fake).item() == pytest.approx(0.5 * (0.875 + 1.0))
    # a perfect discriminator (margins met) has zero loss
    assert hinge_d_loss(torch.full((3,), 1.5), torch.full((3,), -1.0)).item() == 0.0


def test_vanilla_loss_closed_form():
    real, fake = torch.tensor([0.0]), torch.tensor([0.0])
    assert vanilla_d_loss(real, fake).item() == pytest.approx(math.log(2.0))


def test_kl_matches_closed_form_and_torch_distributions():
    mean = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    logvar = torch.tensor([[0.0, 0.0], [math.log(4.0), 0.0]])
    # KL(N(1,1)||N(0,1)) = 0.5; KL(N(0,4)||N(0,1)) = 0.5 * (4 - 1 - ln 4)
    expected = torch.tensor([0.5, 0.5 * (4.0 - 1.0 - math.log(4.0))])
    torch.testing.assert_close(kl_divergence(mean, logvar), expected)

    g = torch.Generator().manual_seed(1)
    mean, logvar = torch.randn(2, 4, 2, 3, 3, generator=g), torch.randn(2, 4, 2, 3, 3, generator=g)
    ref = torch.distributions.kl_divergence(
        torch.distributions.Normal(mean, (0.5 * logvar).exp()), torch.distributions.Normal(0.0, 1.0))
    torch.testing.assert_close(kl_divergence(mean, logvar), ref.flatten(1).sum(1))


def test_adopt_weight_switches_at_threshold():
    assert adopt_weight(1.0, 50000, 50001) == 0.0
    assert adopt_weight(1.0, 50001, 50001) == 1.0
    assert VAELossConfig().disc_start == 50001 and VAELossConfig().kl_weight == 1e-6


def test_adaptive_weight_equals_grad_norm_ratio_by_hand():
    w = torch.tensor([[1.0, -2.0], [0.5, 3.0]], requires_grad=True)
    a = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    nll = (w * a).sum()  # d/dw = a, |a| = 5
    g = (w**2).sum()  # d/dw = 2w
    expected = 0.5 * 5.0 / (2 * w.detach().norm().item() + 1e-4)
    got = adaptive_weight(nll, g, w, scale=0.5)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    assert not got.requires_grad


def test_generator_loss_uses_adaptive_weight_at_decoder_last_layer():
    """Through VAELoss: the GAN term's weight is 0.5 * |grad nll| / (|grad g| + 1e-4) at the given layer."""
    torch.manual_seed(0)
    cfg = tiny_loss_config(disc_start=0, perceptual_weight=0.0)
    loss_fn = VAELoss(cfg)
    decoder_out = nn.Conv3d(4, 3, 1)
    z = torch.randn(1, 4, 5, 16, 16)
    x = torch.rand(1, 3, 5, 16, 16) * 2 - 1
    rec = decoder_out(z)
    mean, logvar = torch.zeros(1, 2, 2, 2, 2), torch.zeros(1, 2, 2, 2, 2)
    loss, log = loss_fn.generator_loss(x, rec, (mean, logvar), global_step=0, last_layer=decoder_out.weight)

    # the same quantities by hand
    rec2 = decoder_out(z)
    nll = ((x - rec2).abs() / loss_fn.logvar.exp() + loss_fn.logvar).sum() / 5
    frames = rec2.transpose(1, 2).reshape(5, 3, 16, 16)
    g = -loss_fn.disc_2d(frames).mean() - loss_fn.disc_3d(rec2).mean()
    gn = torch.autograd.grad(nll, decoder_out.weight, retain_graph=True)[0].norm()
    gg = torch.autograd.grad(g, decoder_out.weight, retain_graph=True)[0].norm()
    expected_w = 0.5 * gn / (gg + 1e-4)
    assert log["d_weight"].item() == pytest.approx(expected_w.item(), rel=1e-5)
    assert loss.item() == pytest.approx((nll + expected_w * g).item(), rel=1e-5)


# ---------------------------------------------------------------- LPIPS


def test_lpips_zero_for_identical_and_symmetric():
    torch.manual_seed(0)
    lpips = LPIPS()
    for lin in lpips.lins:  # LPIPS heads are non-negative after training
        lin.weight.data.abs_()
    x, y = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    assert lpips(x, x).abs().max().item() == 0.0
    d_xy, d_yx = lpips(x, y), lpips(y, x)
    assert d_xy.shape == (2, 1, 1, 1)
    torch.testing.assert_close(d_xy, d_yx)
    assert (d_xy > 0).all()


def test_lpips_matches_torchvision_vgg_and_loads_from_saved_files(tmp_path):
    """Save torchvision's VGG16 (random init) and lpips-style heads to files, load them, compare to a
    hand-written LPIPS computed on torchvision's own modules."""
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    vgg = torchvision.models.vgg16(weights=None).features.eval()
    torch.save({f"features.{k}": v for k, v in vgg.state_dict().items()}, tmp_path / "vgg16_full.pth")
    heads = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate((64, 128, 256, 512, 512))}
    from safetensors.torch import save_file

    save_file(heads, str(tmp_path / "lpips_vgg.safetensors"))

    lpips = LPIPS.from_pretrained(tmp_path / "vgg16_full.pth", tmp_path / "lpips_vgg.safetensors")
    x, y = torch.rand(1, 3, 32, 32) * 2 - 1, torch.rand(1, 3, 32, 32) * 2 - 1

    def reference(a, b):
        shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
        scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
        ha, hb, total = (a - shift) / scale, (b - shift) / scale, 0.0
        bounds = [(0, 4), (4, 9), (9, 16), (16, 23), (23, 30)]
        for i, (s, e) in enumerate(bounds):
            for j in range(s, e):
                ha, hb = vgg[j](ha.clone()), vgg[j](hb.clone())
            na = ha / (ha.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            nb = hb / (hb.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            w = heads[f"lin{i}.model.1.weight"].view(1, -1, 1, 1)
            total = total + ((na - nb).pow(2) * w).sum(1).mean()
        return total

    with torch.no_grad():
        torch.testing.assert_close(lpips(x, y).flatten()[0], reference(x, y), rtol=1e-4, atol=1e-6)

    # our own save format round-trips, and a trunk-only file is rejected with the missing heads named
    lpips.save(tmp_path / "lpips.safetensors")
    again = LPIPS.from_pretrained(tmp_path / "lpips.safetensors")
    with torch.no_grad():
        torch.testing.assert_close(again(x, y), lpips(x, y))
    with pytest.raises(ValueError, match="lins"):
        load_lpips_weights(LPIPS(), tmp_path / "vgg16_full.pth")
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_lpips_weights(LPIPS(), tmp_path / "nope.pth")


def test_vae_loss_config_loads_perceptual_weights(tmp_path):
    torch.manual_seed(0)
    src = LPIPS()
    src.save(tmp_path / "lpips.safetensors")
    loss_fn = VAELoss(tiny_loss_config(perceptual_weights=str(tmp_path / "lpips.safetensors")))
    for (k, v), (k2, v2) in zip(loss_fn.perceptual.state_dict().items(), src.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(v, v2)
    assert not any(p.requires_grad for p in loss_fn.perceptual.parameters())
    loss_fn.train()
    assert not loss_fn.perceptual.training


# ---------------------------------------------------------------- discriminators


def test_discriminator_output_shapes():
    d2 = NLayerDiscriminator(3, base_channels=8, n_layers=3)
    assert d2(torch.randn(2, 3, 64, 64)).shape == (2, 1, 6, 6)  # 64 / 8 - 2
    d3 = Discriminator3D(3, block_out_channels=(8, 16, 32), norm_groups=4)
    assert d3(torch.randn(1, 3, 17, 64, 64)).shape == (1, 1, 3, 8, 8)
    assert d3(torch.randn(2, 3, 1, 32, 48)).shape == (2, 1, 1, 4, 6)  # an image batch
    with pytest.raises(ValueError, match=r"\(B, C, F, H, W\)"):
        d3(torch.randn(3, 32, 32))


def test_blur_pool_is_binomial_average():
    x = torch.zeros(1, 1, 3, 3, 3)
    x[0, 0, 1, 1, 1] = 1.0
    # output (0,0,0) is centred on input 0, so the impulse at 1 sits on the outer tap (1/4) in each axis
    assert blur_pool3d(x)[0, 0, 0, 0, 0].item() == pytest.approx(1 / 64)
    assert blur_pool3d(x).shape == (1, 1, 2, 2, 2)
    ones = torch.ones(1, 2, 5, 5, 5)
    assert blur_pool3d(ones)[0, :, 1, 1, 1].tolist() == pytest.approx([1.0, 1.0])


# ---------------------------------------------------------------- generator / discriminator steps


def test_generator_and_discriminator_steps_are_separate():
    torch.manual_seed(0)
    loss_fn = VAELoss(tiny_loss_config(disc_start=10))
    vae_layer = nn.Conv3d(3, 3, 3, padding=1)
    x = torch.rand(1, 3, 5, 32, 32) * 2 - 1
    rec = torch.tanh(vae_layer(x))
    posterior = (torch.randn(1, 4, 2, 4, 4), torch.zeros(1, 4, 2, 4, 4))

    g, log = loss_fn.generator_loss(x, rec, posterior, global_step=10, last_layer=vae_layer.weight)
    g.backward(retain_graph=True)
    assert vae_layer.weight.grad is not None and vae_layer.weight.grad.abs().sum() > 0
    assert loss_fn.logvar.grad is not None
    assert log["d_weight"].item() > 0 and log["disc_factor"].item() == 1.0
    assert all(p.grad is None for p in loss_fn.discriminator_parameters())  # generator step spares D
    assert all(p.requires_grad for p in loss_fn.discriminator_parameters())  # ... and restores its flags

    vae_layer.zero_grad()
    d, log = loss_fn.discriminator_loss(x, rec, global_step=10)
    d.backward()
    assert vae_layer.weight.grad is None or vae_layer.weight.grad.abs().sum() == 0  # D step spares the VAE
    assert all(p.grad is not None for p in loss_fn.discriminator_parameters())
    assert d.item() > 0 and set(log) >= {"disc_loss", "logits_real", "logits_fake_3d"}


def test_gan_terms_off_before_disc_start():
    torch.manual_seed(0)
    loss_fn = VAELoss(tiny_loss_config(perceptual_weight=0.0))  # default disc_start 50001
    x, rec = torch.rand(2, 3, 1, 16, 16), torch.rand(2, 3, 1, 16, 16)
    mean, logvar = torch.randn(2, 4, 1, 2, 2), torch.randn(2, 4, 1, 2, 2)
    g, log = loss_fn.generator_loss(x, rec, (mean, logvar), global_step=100)
    expected = (x - rec).abs().sum() / 2 + 1e-6 * kl_divergence(mean, logvar).sum() / 2  # logvar = 0
    assert g.item() == pytest.approx(expected.item(), rel=1e-6)
    assert log["g_loss"].item() == 0.0
    d, _ = loss_fn.discriminator_loss(x, rec, global_step=100)
    assert d.item() == 0.0


def test_last_decoder_weight_picks_output_conv():
    class Toy(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Conv2d(3, 4, 1)
            self.decoder = nn.Sequential(nn.Conv2d(4, 8, 1), nn.GroupNorm(2, 8), nn.Conv2d(8, 3, 1))

    toy = Toy()
    assert last_decoder_weight(toy) is toy.decoder[2].weight
    with pytest.raises(ValueError, match="decoder"):
        last_decoder_weight(nn.Linear(2, 2))


@pytest.mark.slow
def test_one_training_step_with_slice_vae():
    """End to end on a tiny SliceVAE: the loss's KL term agrees with DiagonalGaussian.kl(), the adaptive
    weight is taken at decoder.conv_out, and each optimiser only moves its own parameters."""
    from ea_vae import SliceVAE, SliceVAEConfig

    torch.manual_seed(0)
    vae = SliceVAE(SliceVAEConfig.tiny()).train()
    loss_fn = VAELoss(tiny_loss_config(disc_start=0)).train()
    x = torch.rand(1, 3, 1, 16, 16) * 2 - 1  # an image keeps the backward pass cheap
    posterior = vae.encode(x)
    rec = vae.decode(posterior.sample(torch.Generator().manual_seed(0)))
    assert last_decoder_weight(vae) is vae.decoder.conv_out.weight
    g, log = loss_fn.generator_loss(x, rec, posterior, global_step=0, last_layer=last_decoder_weight(vae))
    assert log["kl_loss"].item() == pytest.approx(posterior.kl().sum().item(), rel=1e-5)
    opt_g = torch.optim.Adam([*vae.parameters(), *loss_fn.generator_parameters()], lr=1e-3, betas=(0.5, 0.9))
    opt_d = torch.optim.Adam(loss_fn.discriminator_parameters(), lr=1e-3, betas=(0.5, 0.9))
    d_before = [p.detach().clone() for p in loss_fn.discriminator_parameters()]
    opt_g.zero_grad()
    g.backward()
    opt_g.step()
    assert all(torch.equal(a, b) for a, b in zip(d_before, loss_fn.discriminator_parameters()))
    v_before = [p.detach().clone() for p in vae.parameters()]
    d, _ = loss_fn.discriminator_loss(x, rec, global_step=0)
    opt_d.zero_grad()
    d.backward()
    opt_d.step()
    assert all(torch.equal(a, b) for a, b in zip(v_before, vae.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(d_before, loss_fn.discriminator_parameters()))
