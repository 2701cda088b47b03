"""ea_dit.latent_cache and the fixed-noise validation loss, against plain recomputation."""

import pytest
import torch

from ea_dit import VideoDiT, VideoDiTConfig
from ea_dit.diffusion import GaussianDiffusion
from ea_dit.latent_cache import LatentCache, build_latent_cache
from ea_dit.training.validation import fixed_validation_loss


def _batches(n_batches=3, b=4, shape=(3, 5, 16, 16), seed=0):
    g = torch.Generator().manual_seed(seed)
    words = ["left", "right", "up", "down"]
    return [{"pixel_values": torch.randn(b, *shape, generator=g),
             "caption": [f"a red circle moves {words[(i + j) % 4]}" for j in range(b)]} for i in range(n_batches)]


def _encode_video(v):  # a stand-in "VAE": 2x average pooling gives the mean, a constant std
    mean = torch.nn.functional.avg_pool3d(v, (1, 2, 2))[:, :2]
    return mean, torch.full_like(mean, 0.1)


def _encode_text(prompts, length=12, dim=8):
    """Deterministic per-prompt embeddings padded to `length` (mask = number of words + 1)."""
    out, mask = torch.zeros(len(prompts), length, dim), torch.zeros(len(prompts), length, dtype=torch.bool)
    for i, p in enumerate(prompts):
        n = len(p.split()) + 1
        g = torch.Generator().manual_seed(sum(map(ord, p)))
        out[i, :n] = torch.randn(n, dim, generator=g)
        mask[i, :n] = True
    return out, mask


def test_cache_round_trip(tmp_path):
    batches = _batches()
    build_latent_cache(batches, _encode_video, _encode_text, tmp_path / "c", passes=2)
    cache = LatentCache(tmp_path / "c")
    assert len(cache) == 2 * 12 and cache.captions[0] == ""
    assert cache.embeds.shape[1] == 6  # trimmed to the longest caption (5 words + end token)
    items = cache.items(0, torch.arange(4))
    mean, _ = _encode_video(batches[0]["pixel_values"])
    torch.testing.assert_close(items["mean"], mean)
    assert items["caption"] == batches[0]["caption"]
    full, full_mask = _encode_text(items["caption"])
    torch.testing.assert_close(items["embeds"], full[:, :6])
    assert torch.equal(items["mask"], full_mask[:, :6]) and not full_mask[:, 6:].any()
    b = cache.batch(5, torch.Generator().manual_seed(0))
    assert b["mean"].shape == (5, 2, 5, 8, 8) and len(b["caption"]) == 5
    e, m = cache.text(["", "a red circle moves up"])
    assert m[0].sum() == 1 and m[1].sum() == 6
    with pytest.raises(KeyError, match="not in the cache"):
        cache.text(["a blue star"])


def test_cache_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a latent cache"):
        LatentCache(tmp_path)
    with pytest.raises(ValueError, match="empty"):
        build_latent_cache([], _encode_video, _encode_text, tmp_path / "c")


def _tiny_dit():
    torch.manual_seed(0)
    dit = VideoDiT(VideoDiTConfig.tiny(in_channels=2, sample_size=8, caption_channels=8, depth=2)).eval()
    for p in dit.parameters():  # a fresh DiT's output layer is zero: give it a non-trivial output
        p.data.add_(0.02 * torch.randn_like(p))
    return dit


def test_trimmed_embeddings_give_the_same_dit_output():
    dit = _tiny_dit()
    full, mask = _encode_text(["a red circle moves left", "a red circle moves up"])
    x, t = torch.randn(2, 2, 3, 8, 8), torch.tensor([10, 500])
    with torch.no_grad():
        torch.testing.assert_close(dit(x, t, full, mask), dit(x, t, full[:, :6], mask[:, :6]),
                                   atol=1e-5, rtol=1e-5)


def test_fixed_validation_loss_matches_plain_loop_and_is_repeatable():
    dit, diffusion = _tiny_dit(), GaussianDiffusion()
    latents = torch.randn(5, 2, 3, 8, 8)
    embeds, mask = _encode_text(["a red circle moves left"] * 5)
    got = fixed_validation_loss(dit, diffusion, latents, embeds, mask, timesteps=(100, 700), seed=3, batch_size=2)
    again = fixed_validation_loss(dit, diffusion, latents, embeds, mask, timesteps=(100, 700), seed=3, batch_size=5)
    assert got == pytest.approx(again, rel=1e-5)
    noise = torch.randn((2, *latents.shape), generator=torch.Generator().manual_seed(3))
    for k, t in enumerate((100, 700)):
        a = float(diffusion.alphas_cumprod[t])  # x_t = sqrt(abar) x0 + sqrt(1 - abar) eps
        xt = a ** 0.5 * latents + (1 - a) ** 0.5 * noise[k]
        with torch.no_grad():
            eps = dit(xt, torch.full((5,), t), embeds, mask)[:, :2]
        assert got[f"val_mse_t{t}"] == pytest.approx((eps - noise[k]).square().mean().item(), rel=1e-4)
    assert got["val_mse"] == pytest.approx((got["val_mse_t100"] + got["val_mse_t700"]) / 2)
